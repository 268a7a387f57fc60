"""doctor: a read-only report of drift between the chart and coderd. Exit 0 healthy, 1 drift."""

from __future__ import annotations

from jobs import republish
from jobs.coder import client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_NOT_CONVERGED, EXIT_OK, CoderAPIError
from jobs.plan import Action
from jobs.settings import RecoverSettings
from jobs.template_source import load_templates


def run(settings: RecoverSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())
    drift: list[Action] = []
    with client_from_settings(settings) as client:
        client.wait_ready()
        if not client.first_user_exists():
            drift.append(Action("drift", "user/first", "coderd has no first user (run recover)"))
            drift += [Action("drift", f"template/{t.name}", "cannot be checked before the first user exists") for t in templates]
        else:
            for local in templates:
                try:
                    remote = republish.observe(client, settings.coder_organization, local)
                except CoderAPIError as err:
                    drift.append(Action("drift", f"template/{local.name}", f"cannot read it: {err.describe()}"))
                    continue
                for action in republish.plan(local, remote):
                    if action.kind != "nothing":
                        drift.append(Action("drift", action.target, f"{action.kind}: {action.reason}", action.details))
    for action in drift:
        ctx.log.warning(f"drift {action.target}", reason=action.reason, **action.details)
    ctx.log.info("doctor", healthy=not drift, drift=len(drift), templates=[t.name for t in templates])
    return EXIT_NOT_CONVERGED if drift else EXIT_OK
