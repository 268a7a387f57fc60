"""doctor: a read-only report of drift between the chart and coderd. Exit 0 healthy, 1 drift,
3 could not check (coderd unreachable, or failing past CODER_READY_TIMEOUT): never reported as drift.

It repeats what `recover` repeats (jobs/coder.py's transport rules, then the whole observation
after a transient 5xx such as coderd's "Internal error fetching user count" during a database
outage), within the same CODER_READY_TIMEOUT.

Besides what republish-templates would change (content, settings, and every variable value the
active version holds that differs from the folder's), it reports templates that use an external
auth provider coderd does not have: neither a new version nor a workspace of them can build.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from jobs import republish, retry
from jobs.coder import CoderClient, client_from_settings, is_transient
from jobs.context import RunContext
from jobs.errors import EXIT_COULD_NOT_CHECK, EXIT_NOT_CONVERGED, EXIT_OK, CoderAPIError, CoderUnavailable
from jobs.log import summary
from jobs.plan import Plan, Report
from jobs.settings import DoctorSettings
from jobs.template_source import LocalTemplate, load_templates

Drift = Report[Literal["drift"]]


def _drift(target: str, reason: str, details: Mapping[str, object] | None = None) -> Drift:
    return Drift(kind="drift", target=target, reason=reason, details=details or {}, warn=True)


def drift(local: LocalTemplate, remote: republish.RemoteTemplate, configured: list[str] | None) -> Plan[Drift]:
    """What republish-templates would change, and the external auth providers the template needs
    that coderd lacks (`configured` is None when the template needs none). Pure."""
    found = [_drift(a.target, f"{a.kind}: {a.reason}", a.details) for a in republish.plan(local, remote) if a.writes]
    missing = republish.missing_providers(local, configured) if configured is not None else []
    if missing:
        found.append(_drift(f"template/{local.name}", republish.external_auth_message(
            local.name, missing, configured, written="nothing can be built from it"),
            {"missing_external_auth": missing}))
    return Plan(tuple(found))


def observe(client: CoderClient, settings: DoctorSettings, templates: list[LocalTemplate]) -> Plan[Drift]:
    """One whole read of coderd, compared with the folders. A transient error propagates, so the
    caller reads everything again."""
    if not client.first_user_exists():
        return Plan((_drift("user/first", "coderd has no first user (run recover)"),) + tuple(
            _drift(f"template/{t.name}", "cannot be checked before the first user exists") for t in templates))
    found: Plan[Drift] = Plan()
    preflight = republish.Preflight(client, settings.coder_organization)
    for local in templates:
        try:
            remote = republish.observe(client, settings.coder_organization, local, read_values=True)
        except CoderAPIError as err:
            if is_transient(err):
                raise
            found += Plan((_drift(f"template/{local.name}", f"cannot read it: {err.describe()}"),))
            continue
        if remote.template is None:
            preflight.require_organization()  # exit 2 when CODER_ORGANIZATION is wrong
        found += drift(local, remote, preflight.providers() if local.external_auth else None)
    return found


def run(settings: DoctorSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())
    try:
        with client_from_settings(settings) as client:
            client.wait_ready()
            found = retry.replan(lambda: observe(client, settings, templates), transient=is_transient,
                                 deadline=settings.coder_ready_timeout, log=ctx.log, what="drift report")
    except (CoderUnavailable, CoderAPIError) as err:
        if isinstance(err, CoderAPIError) and not is_transient(err):
            raise
        cause = err.describe() if isinstance(err, CoderAPIError) else str(err)
        ctx.log.error(f"could not check: coderd did not answer within CODER_READY_TIMEOUT "
                      f"({settings.coder_ready_timeout:g}s); drift is unknown, not found. Last error: {cause}",
                      exit_code=EXIT_COULD_NOT_CHECK)
        summary(ctx.log, checked=0, changed=0, columns={"drift": 0}, healthy=None, checked_ok=False,
                templates=[t.name for t in templates])
        return EXIT_COULD_NOT_CHECK
    for action in found:
        ctx.log.warning(f"drift {action.target}", reason=action.reason, **action.details)
    summary(ctx.log, checked=1 + len(templates), changed=0, columns={"drift": len(found)}, healthy=not found,
            templates=[t.name for t in templates])
    return EXIT_NOT_CONVERGED if found else EXIT_OK
