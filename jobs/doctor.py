"""doctor: a read-only report of drift between the chart and coderd. Exit 0 healthy, 1 drift.

Besides what republish-templates would change (content, settings, and every variable value the
active version holds that differs from the folder's), it reports templates that use an external
auth provider coderd does not have: neither a new version nor a workspace of them can build.
"""

from __future__ import annotations

from jobs import republish
from jobs.coder import client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_NOT_CONVERGED, EXIT_OK, CoderAPIError
from jobs.log import summary
from jobs.plan import Action
from jobs.settings import DoctorSettings
from jobs.template_source import load_templates


def run(settings: DoctorSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())
    drift: list[Action] = []
    with client_from_settings(settings) as client:
        client.wait_ready()
        if not client.first_user_exists():
            drift.append(Action("drift", "user/first", "coderd has no first user (run recover)"))
            drift += [Action("drift", f"template/{t.name}", "cannot be checked before the first user exists") for t in templates]
        else:
            preflight = republish.Preflight(client, settings.coder_organization)
            for local in templates:
                try:
                    remote = republish.observe(client, settings.coder_organization, local, read_values=True)
                except CoderAPIError as err:
                    drift.append(Action("drift", f"template/{local.name}", f"cannot read it: {err.describe()}"))
                    continue
                if remote.template is None:
                    preflight.require_organization()  # exit 2 when CODER_ORGANIZATION is wrong
                for action in republish.plan(local, remote):
                    if action.kind != "nothing":
                        drift.append(Action("drift", action.target, f"{action.kind}: {action.reason}", action.details))
                missing = republish.missing_providers(local, preflight.providers()) if local.external_auth else []
                if missing:
                    drift.append(Action("drift", f"template/{local.name}", republish.external_auth_message(
                        local.name, missing, preflight.providers(), written="nothing can be built from it"),
                        {"missing_external_auth": missing}))
    for action in drift:
        ctx.log.warning(f"drift {action.target}", reason=action.reason, **action.details)
    summary(ctx.log, checked=1 + len(templates), changed=0, columns={"drift": len(drift)}, healthy=not drift,
            templates=[t.name for t in templates])
    return EXIT_NOT_CONVERGED if drift else EXIT_OK
