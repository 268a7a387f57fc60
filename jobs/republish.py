"""republish-templates: make each Coder template's active version match the chart's files.

observe (read coderd) -> plan (pure: create / publish-version / update-settings / nothing)
-> check (what a write needs from coderd's configuration) -> apply. A write that meets another
republisher's (a 409 on the create) ends the pass, and the template is observed and planned again
(jobs.retry.replan), as after a transient coderd error. A run that finds everything
current writes nothing: the active version's content fingerprint is recorded in its message, or
computed from its archive when it was pushed by hand, so identical content is never pushed twice
(`coder templates push` always would).

Each template is converged on its own: one that cannot be (a failed build, an external auth
provider coderd lacks) is reported and the others still are; the exit code is the worst outcome.
A problem that is not the template's (coderd unreachable, the credentials, an unknown
CODER_ORGANIZATION) ends the run, since every other template would meet it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from jobs import retry
from jobs.archive import files_from_tar, fingerprint
from jobs.coder import CoderClient, client_from_settings, is_transient, is_unparsable_template, unconfigured_external_auth
from jobs.context import RunContext
from jobs.errors import EXIT_OK, CoderAPIError, ConcurrentChange, ConfigError, JobError, TemplateError
from jobs.log import summary
from jobs.models import ProvisionerJobLog, Template, TemplateVersion
from jobs.plan import Action, Plan, Report, log_plan
from jobs.settings import ExternalAuthSettings, TemplatesSettings
from jobs.template_source import LocalTemplate, load_templates

_MARKER = re.compile(r"coder-jobs content=(sha256:[0-9a-f]{64}) variables=(sha256:[0-9a-f]{64})")
# UpdateTemplateMeta is a full replace (BEHAVIOR.md §6): every field we do not manage is
# copied from the server so a settings change cannot reset it.
_COPIED_META = (
    "name", "display_name", "description", "icon", "default_ttl_ms", "activity_bump_ms",
    "allow_user_autostart", "allow_user_autostop", "allow_user_cancel_workspace_jobs", "failure_ttl_ms",
    "time_til_dormant_ms", "time_til_dormant_autodelete_ms", "require_active_version", "deprecation_message",
    "autostop_requirement", "autostart_requirement", "max_port_share_level",
)
_REDACTED = "*redacted*"
EXTERNAL_AUTH_SECRET = ExternalAuthSettings.model_fields["external_auth_target_secret"].default
RUNBOOK_EXTERNAL_AUTH = "RUNBOOK.md section 2, 'Templates missing or stale', step 5"
MAX_ERROR_LINES = 20


@dataclass(frozen=True)
class RemoteTemplate:
    template: Template | None
    active_content: str | None = None  # fingerprint of the active version's files
    active_variables: str | None = None  # None: not recorded (pushed by hand)
    active_values: dict[str, str | None] | None = None  # the active version's variables (None: redacted); None: not read
    parameter_flow: bool = False  # coderd knows `use_classic_parameter_flow` (decided from its buildinfo)


def version_marker(local: LocalTemplate) -> str:
    return f"coder-jobs content={local.fingerprint} variables={local.variables_fingerprint()}"


def version_name(local: LocalTemplate) -> str:
    # Deterministic, so a retry or a racing run hits coderd's per-template name check (409).
    content = local.fingerprint.split(":")[1][:12]
    variables = local.variables_fingerprint().split(":")[1][:6]
    return f"cj-{content}-{variables}"


def retry_name(name: str, taken: set[str]) -> str:
    """`name-2`, `name-3`, ...: the first attempt number no version of the template has."""
    attempt = 2
    while f"{name}-{attempt}" in taken:
        attempt += 1
    return f"{name}-{attempt}"


def version_message(local: LocalTemplate, revision: str | None) -> str:
    first = f"Published by coder-jobs from revision {revision}" if revision else "Published by coder-jobs"
    return f"{first}\n\n{version_marker(local)} revision={revision or 'unknown'}"


def settings_diff(local: LocalTemplate, template: Template, parameter_flow: bool = False) -> dict[str, Any]:
    return {k: v for k, v in local.settings.meta(parameter_flow).items() if getattr(template, k) != v}


def differing_variables(local: LocalTemplate, active: dict[str, str | None]) -> list[str]:
    """Variables whose value on coderd is not the folder's; redacted (sensitive) ones cannot be told."""
    return [v["name"] for v in local.variable_values()
            if v["name"] not in active or (active[v["name"]] is not None and active[v["name"]] != v["value"])]


def missing_providers(local: LocalTemplate, configured: list[str]) -> list[str]:
    return [p for p in local.external_auth if p not in configured]


def external_auth_message(name: str, missing: list[str], configured: list[str] | None, *, written: str) -> str:
    ids = ", ".join(f'"{p}"' for p in missing)
    known = "" if configured is None else f" (configured: {', '.join(configured) or 'none'})"
    return (
        f"template {name} uses external auth provider {ids}, which coderd does not have configured{known}; "
        f"coderd fails the import of such a version, so {written}. "
        f"coderd reads the provider from the Secret {EXTERNAL_AUTH_SECRET}, which sync-external-auth materializes: "
        f"run sync-external-auth, then restart coderd, then republish ({RUNBOOK_EXTERNAL_AUTH})"
    )


def unchanged_text(new_template: bool) -> str:
    """What a failed build left behind: a new template has no active version to keep."""
    return "no template was created" if new_template else "the active version is unchanged"


def failed_build_message(name: str, version: TemplateVersion, logs: list[ProvisionerJobLog],
                         new_template: bool = False) -> str:
    """The job's error, then every log line that carries an error (the tail only when none does)."""
    error = version.job.error or "no error text"
    text = (f"template {name}: version {version.name} failed to build ({version.job.status}): {error}; "
            f"{unchanged_text(new_template)}")
    not_configured = unconfigured_external_auth(error)
    if not_configured:
        return external_auth_message(name, not_configured, None, written="this version failed") + f". {text}"
    errors = [entry for entry in logs if entry.log_level == "error"]
    if errors:
        lines, title = errors[:MAX_ERROR_LINES], "Error log lines"
    else:
        lines, title = logs[-10:], "No log line carries an error; last log lines"
    return text + f". {title}:\n" + "\n".join(f"  [{entry.stage}] {entry.output}" for entry in lines)


# -- observe ---------------------------------------------------------------------------
def observe(client: CoderClient, org: str, local: LocalTemplate, *, read_values: bool = False) -> RemoteTemplate:
    flow = client.knows_parameter_flow
    template = client.template(org, local.name)
    if template is None:
        return RemoteTemplate(None, parameter_flow=flow)
    version = client.template_version(template.active_version_id)
    marker = _MARKER.search(version.message or "")
    values = _active_values(client, version) if read_values or not marker else None  # not ours: no marker
    if marker:
        return RemoteTemplate(template, marker.group(1), marker.group(2), values, flow)
    # Pushed by hand (or by an older tool): fingerprint what coderd actually holds.
    files = files_from_tar(client.download(version.job.file_id))
    return RemoteTemplate(template, fingerprint(files), None, values, flow)


def _active_values(client: CoderClient, version: TemplateVersion) -> dict[str, str | None] | None:
    """name -> value (None when coderd redacts it), or None while the job has not finished (403)."""
    try:
        variables = client.template_version_variables(version.id)
    except CoderAPIError as err:
        if err.status == 403:
            return None
        raise
    return {v.name: None if v.sensitive and v.value == _REDACTED else v.value for v in variables}


# -- plan (pure) -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CreateTemplate(Action):
    kind: Literal["create-template"] = field(default="create-template", init=False)
    parameter_flow: bool  # coderd knows `use_classic_parameter_flow`


@dataclass(frozen=True, kw_only=True)
class PublishVersion(Action):
    """Build a version of the folder and make it the template's active one."""

    kind: Literal["publish-version"] = field(default="publish-version", init=False)
    template: Template


@dataclass(frozen=True, kw_only=True)
class UpdateSettings(Action):
    kind: Literal["update-settings"] = field(default="update-settings", init=False)
    template: Template
    parameter_flow: bool


RepublishAction = CreateTemplate | PublishVersion | UpdateSettings | Report[Literal["nothing"]]


def plan(local: LocalTemplate, remote: RemoteTemplate) -> Plan[RepublishAction]:
    target = f"template/{local.name}"
    if remote.template is None:
        details: dict[str, object] = {"fingerprint": local.fingerprint}
        if remote.parameter_flow:
            details["use_classic_parameter_flow"] = local.settings.use_classic_parameter_flow
        return Plan((CreateTemplate(target=target, reason="missing on coderd", details=details,
                                    parameter_flow=remote.parameter_flow),))
    template = remote.template
    actions: list[RepublishAction] = []
    same_content = remote.active_content == local.fingerprint
    wanted_vars = local.variables_fingerprint()
    differing = differing_variables(local, remote.active_values) if remote.active_values is not None else []
    same_vars = remote.active_variables in (None, wanted_vars) and not differing
    if not same_content:
        actions.append(PublishVersion(target=target, reason="active version's content differs", template=template,
                                      details={"fingerprint": local.fingerprint, "active_fingerprint": remote.active_content}))
    elif not same_vars:
        details = {"fingerprint": local.fingerprint}
        if differing:
            details["variables"] = differing
        actions.append(PublishVersion(target=target, reason="template variable values changed", details=details,
                                      template=template))
    diff = settings_diff(local, template, remote.parameter_flow)
    if diff:
        actions.append(UpdateSettings(target=target, reason="settings differ", details={"changes": sorted(diff)},
                                      template=template, parameter_flow=remote.parameter_flow))
    if not actions:
        reason = "active version and settings are current"
        if remote.active_variables is None:
            reason = "adopted: the active version (pushed by hand) has identical content"
        actions.append(Report(kind="nothing", target=target, reason=reason, details={"fingerprint": local.fingerprint}))
    return Plan(tuple(actions))


# -- check: what a write needs from coderd, read once and only when something is written ---
class Preflight:
    def __init__(self, client: CoderClient, org: str, written: str | None = None) -> None:
        """`written`: what this run wrote before the organization could be checked (recover on a
        fresh database creates the first user first: without a user there is no session to ask with)."""
        self.client = client
        self.org = org
        self.written = written
        self._org_known = False
        self._providers: list[str] | None = None

    def require_organization(self) -> None:
        """A template lookup answers 404 for an unknown organization too (BEHAVIOR.md §11): ask
        the organization itself before creating anything in it."""
        if self._org_known:
            return
        try:
            self.client.organization(self.org)
        except CoderAPIError as err:
            if err.status in (400, 404):
                problem = (f"CODER_ORGANIZATION: coderd has no organization {self.org!r} that the admin can see "
                           f"(`default` is the default organization)")
                if self.written:
                    # Not exit 2: that promises nothing was written.
                    raise JobError(f"{problem}; {self.written} before the organization could be checked, "
                                   "and nothing else was written") from None
                raise ConfigError(f"{problem}; nothing was written") from None
            raise
        self._org_known = True

    def providers(self) -> list[str]:
        if self._providers is None:
            self._providers = self.client.external_auth_providers()
        return self._providers

    def check(self, local: LocalTemplate, p: Plan[RepublishAction]) -> None:
        if p.of_type(CreateTemplate):
            self.require_organization()
        builds = any(isinstance(a, CreateTemplate | PublishVersion) for a in p)
        if not builds or not local.external_auth:
            return
        missing = missing_providers(local, self.providers())
        if missing:
            raise TemplateError(external_auth_message(local.name, missing, self.providers(), written="nothing was uploaded"))


# -- apply -----------------------------------------------------------------------------
class Publisher:
    def __init__(self, client: CoderClient, settings: TemplatesSettings, log: Any, poll_interval: float = 0.5) -> None:
        self.client = client
        self.org = settings.coder_organization
        self.revision = settings.templates_revision
        self.timeout = settings.template_build_timeout
        self.log = log
        self.poll_interval = poll_interval
        # Versions built in this process, reused when a later step fails and we re-plan,
        # so a retry never builds the same content twice.
        self._built: dict[tuple[str, str | None], TemplateVersion] = {}

    def apply(self, local: LocalTemplate, p: Plan[RepublishAction]) -> None:
        for action in p:
            match action:
                case CreateTemplate(parameter_flow=flow):
                    self.create_template(local, flow)
                case PublishVersion(template=template):
                    version = self.build_version(local, template.id)
                    self.client.activate_version(template.id, version.id)
                    self.log.info("activated version", template=local.name, version=version.name, version_id=version.id)
                case UpdateSettings(template=template, parameter_flow=flow):
                    self.update_settings(local, template, flow)
                case Report():
                    pass
                case _:
                    assert_never(action)

    def create_template(self, local: LocalTemplate, parameter_flow: bool) -> None:
        version = self.build_version(local, None)
        body = {"name": local.name, "template_version_id": version.id, **local.settings.create_meta(parameter_flow)}
        try:
            template = self.client.create_template(self.org, body)
        except CoderAPIError as err:
            if err.status != 409:
                raise
            # Another republisher created it first: converge onto what is there now.
            self.log.info("template created concurrently, re-planning", template=local.name)
            raise ConcurrentChange(f"template {local.name} was created by another republisher meanwhile") from None
        self.log.info("created template", template=local.name, template_id=template.id, version=version.name)

    def update_settings(self, local: LocalTemplate, template: Template, parameter_flow: bool) -> None:
        body = {k: getattr(template, k) for k in _COPIED_META if getattr(template, k) is not None}
        body.update(local.settings.meta(parameter_flow))
        changed = self.client.update_template_meta(template.id, body)
        self.log.info("updated template settings", template=local.name, changed=changed)

    def build_version(self, local: LocalTemplate, template_id: str | None) -> TemplateVersion:
        key = (local.fingerprint + local.variables_fingerprint(), template_id)
        version = self._built.get(key)
        if version is None:
            file_id = self.client.upload(local.archive)
            body: dict[str, Any] = {
                "storage_method": "file",
                "provisioner": "terraform",
                "file_id": file_id,
                "name": version_name(local),
                "message": version_message(local, self.revision),
                # Every declared variable: coderd would carry an omitted one over (BEHAVIOR.md §11).
                "user_variable_values": local.variable_values(),
            }
            if template_id:
                body["template_id"] = template_id
            version = self._create_version(local, body, template_id)
        # Cached before waiting: a re-plan after a failed poll waits on it instead of building again.
        self._built[key] = version
        try:
            version = self.wait_for_job(local, version, new_template=template_id is None)
        except CoderAPIError:
            raise  # a failed poll, not a failed build: the re-plan waits on this version again
        except JobError:
            del self._built[key]
            raise
        self._built[key] = version
        return version

    def _create_version(self, local: LocalTemplate, body: dict[str, Any], template_id: str | None) -> TemplateVersion:
        try:
            return self.client.create_template_version(self.org, body)
        except CoderAPIError as err:
            if err.status == 409 and template_id:
                versions = self.client.template_versions(template_id)
                existing = next((v for v in versions if v.name == body["name"]), None)
                if existing is not None and existing.job.status != "failed" and existing.job.status != "canceled":
                    self.log.info("reusing the version already built for this content", template=local.name, version=existing.name)
                    return existing
                # The name is taken by a failed build of this content: one new attempt per run, named
                # by its number (not the clock: two runs in the same second would collide).
                body = {**body, "name": retry_name(body["name"], {v.name for v in versions})}
                return self.client.create_template_version(self.org, body)
            if is_unparsable_template(err):
                raise TemplateError(f"template {local.name}: coderd could not parse the template: {err.detail or err.message}") from None
            raise

    def wait_for_job(self, local: LocalTemplate, version: TemplateVersion, new_template: bool = False) -> TemplateVersion:
        first: TemplateVersion | None = version

        def fetch() -> TemplateVersion:
            nonlocal first
            if first is not None:  # what coderd answered to the create: no need to ask again at once
                fetched, first = first, None
                return fetched
            return self.client.template_version(version.id)

        version = retry.poll(fetch, done=lambda v: v.job.terminal, deadline=self.timeout, initial=0.1,
                             maximum=self.poll_interval * 2)
        if not version.job.terminal:
            self.client.cancel_template_version(version.id)
            raise TemplateError(
                f"template {local.name}: version {version.name} was not built within {self.timeout:g}s "
                f"(TEMPLATE_BUILD_TIMEOUT; job {version.job.status}); {unchanged_text(new_template)}"
                + ("" if version.job.status != "pending" else ": is a provisioner daemon running?")
            )
        if version.job.status != "succeeded":
            raise TemplateError(failed_build_message(local.name, version, self.client.template_version_logs(version.id),
                                                     new_template))
        self.log.info("version built", template=local.name, version=version.name, version_id=version.id)
        return version


def converge(client: CoderClient, settings: TemplatesSettings, ctx: RunContext,
             templates: list[LocalTemplate] | None = None, written: str | None = None) -> Plan[RepublishAction]:
    if templates is None:
        templates = load_templates(settings.templates_dir, settings.template_names())
    publisher = Publisher(client, settings, ctx.log)
    preflight = Preflight(client, settings.coder_organization, written)
    done: Plan[RepublishAction] = Plan()
    failed: list[str] = []
    for local in templates:
        def one(local: LocalTemplate = local) -> Plan[RepublishAction]:
            p = plan(local, observe(client, settings.coder_organization, local))
            log_plan(ctx.log, p, ctx.dry_run)
            preflight.check(local, p)
            if not ctx.dry_run:
                publisher.apply(local, p)
            return p

        try:
            done += retry.replan(one, transient=is_transient, deadline=settings.coder_ready_timeout, log=ctx.log,
                                 what=f"template {local.name}")
        except TemplateError as err:
            ctx.log.error(str(err), template=local.name)
            failed.append(local.name)
    if failed:
        others = "; the others converged" if len(failed) < len(templates) else ""
        summary(ctx.log, checked=len(templates), changed=done.writes, failed=len(failed),
                dry_run=ctx.dry_run)
        raise JobError(f"{len(failed)} of {len(templates)} templates did not converge: {', '.join(failed)} "
                       f"(each one's cause is logged above){others}")
    return done


def run(settings: TemplatesSettings, ctx: RunContext) -> int:
    templates = load_templates(settings.templates_dir, settings.template_names())  # bad input fails first
    with client_from_settings(settings) as client:
        client.wait_ready()
        actions = converge(client, settings, ctx, templates)
    summary(ctx.log, checked=len(templates), changed=actions.writes, dry_run=ctx.dry_run)
    return EXIT_OK
