"""Configuration from environment variables (the chart sets them); CLI flags override.

One class per job. Loading never echoes a value back: errors name the variable and
what is wrong with it, so a bad password can be reported without being printed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AnyHttpUrl, Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from jobs import reap_rules, validation
from jobs.errors import ConfigError

_T = TypeVar("_T")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TOKEN = re.compile(r"^[A-Za-z0-9]+-[A-Za-z0-9]+$")


def _check(value: _T, problem: str | None) -> _T:
    if problem:
        raise ValueError(problem)
    return value


def coder_url_problem(value: Any) -> str | None:
    """Why `value` cannot be CODER_URL, in our words (pydantic's speak of "relative URL without a
    base"), never repeating the value: it may hold a password."""
    text = str(value).strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        return "is not a URL (expected http://host[:port], e.g. http://coder.coder.svc.cluster.local)"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ("needs a scheme and a host: http://host[:port] or https://host[:port], e.g. "
                "http://coder.coder.svc.cluster.local")
    if "@" in parts.netloc:
        # Refused rather than redacted: a credential in a URL ends up in every event, error and
        # proxy log that prints the URL. The jobs take credentials only as secrets.
        return ("must not carry credentials (user:password@host); give them as CODER_SESSION_TOKEN or "
                "CODER_ADMIN_EMAIL and CODER_ADMIN_PASSWORD")
    if not parts.hostname or (port is not None and not 0 < port < 65536):
        return "is not a URL (expected http://host[:port], e.g. http://coder.coder.svc.cluster.local)"
    if parts.query or parts.fragment:
        return "must be a base URL, without ?query or #fragment"
    return None


# A Kubernetes object name (RFC 1123 subdomain), as the API server checks it: checked here so a
# bad name exits 2 before any write, not 1 after the server's 422.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def object_name_problem(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        return ("is not a valid Kubernetes object name (lowercase letters, digits, '-' and '.', starting and "
                "ending with a letter or digit, at most 253 characters)")
    return None


class JobSettings(BaseSettings):
    # defer_build: a job builds only its own class's validator, not all seven at import.
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, case_sensitive=False, defer_build=True)

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any]) -> list[str]:
        """Checks that span several variables. `raw` is env + overrides, upper-cased keys."""
        return []

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Settings read from the environment only: a flag would show the value in `ps`."""
        return [name for name, info in cls.model_fields.items() if "SecretStr" in str(info.annotation)]

    def public_values(self) -> dict[str, Any]:
        """The effective non-secret settings, by variable name, for the log at start."""
        public = self.model_dump(mode="json", exclude=set(self.secret_fields()))
        return {env_name(name): value for name, value in public.items()}

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for the log redactor."""
        out = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        return out


class CoderSettings(JobSettings):
    """How to reach coderd and authenticate. Shared by every job that calls the Coder API."""

    coder_url: AnyHttpUrl = Field(description="Base URL of coderd, e.g. http://coder.coder.svc.cluster.local")
    coder_session_token: SecretStr | None = Field(None, description="API token; when unset, log in with the admin credentials")
    coder_admin_email: str | None = Field(None, description="Email of the admin to log in as (needed when "
                                                            "CODER_SESSION_TOKEN is unset)")
    coder_admin_password: SecretStr | None = Field(None, description="Password of that admin (needed when "
                                                                     "CODER_SESSION_TOKEN is unset)")
    coder_organization: str = Field("default", description="Organization name or id (`default` = the default org)")
    coder_ready_timeout: float = Field(300.0, gt=0, le=86400, description="Seconds to wait for coderd to answer")
    coder_request_timeout: float = Field(30.0, gt=0, le=600, description="Seconds for one HTTP request")

    @field_validator("coder_url", mode="before")
    @classmethod
    def _url(cls, value: Any) -> Any:
        return _check(value, coder_url_problem(value))

    @field_validator("coder_organization")
    @classmethod
    def _organization(cls, value: str) -> str:
        # It goes into a URL path: a name coderd could never have (or a control character, which
        # httpx refuses as an invalid URL) is bad input, not a lookup that fails later.
        if _UUID.match(value):
            return value
        return _check(value, validation.username_problem(value) and
                      "is neither an organization id nor a valid organization name (letters, digits and "
                      "single inner hyphens, at most 32 characters)")

    @field_validator("coder_session_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # coderd's format is <id>-<secret> (BEHAVIOR.md §1); anything else would be a 401 later,
        # or not even sendable as a header.
        if value is not None and not _TOKEN.match(value.get_secret_value()):
            raise ValueError("is not a Coder API token (expected <id>-<secret>, letters and digits)")
        return value

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any]) -> list[str]:
        if raw.get("CODER_SESSION_TOKEN"):
            return []
        missing = [n for n in ("CODER_ADMIN_EMAIL", "CODER_ADMIN_PASSWORD") if not raw.get(n)]
        if missing:
            return [f"{' and '.join(missing)}: required when CODER_SESSION_TOKEN is not set"]
        return []


class BootstrapSettings(CoderSettings):
    coder_admin_username: str = Field(description="Username of the first user")
    coder_admin_email: str = Field(description="Email of the first user")
    coder_admin_password: SecretStr = Field(description="Password of the first user")
    coder_admin_name: str | None = Field(None, description="Full name of the first user")
    coder_setup_token: SecretStr | None = Field(None, description="One-time setup token newer coderd releases may require")

    # coderd's rules for these are checked by bootstrap-admin just before it creates the first
    # user, and nowhere else: a job logging in as an existing admin lets coderd judge them.

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any]) -> list[str]:
        return []  # the admin credentials are required fields here


class TemplateFolderSettings(CoderSettings):
    """Where the templates are, and which of them a job works on."""

    templates_dir: Path = Field(description="Folder with one subfolder per Coder template")
    templates: str | None = Field(None, description="Comma list of the template folders to work on (unset: every "
                                                    "subfolder of TEMPLATES_DIR)")

    @field_validator("templates_dir")
    @classmethod
    def _is_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"not a directory: {value}")
        return value

    def template_names(self) -> list[str] | None:
        if not self.templates:
            return None
        return [t.strip() for t in self.templates.split(",") if t.strip()]


class TemplatesSettings(TemplateFolderSettings):
    templates_revision: str | None = Field(None, description="Revision recorded on new versions, e.g. a git commit")
    template_build_timeout: float = Field(600.0, gt=0, le=7200, description="Seconds to wait for a version's provisioner job")


class RecoverSettings(BootstrapSettings, TemplatesSettings):
    """`recover` needs both the first-user and the template settings."""


class DoctorSettings(TemplateFolderSettings):
    """What `doctor` reads: how to reach coderd and which templates to compare; it creates
    nothing, so neither the first user's details nor the build settings."""


class ExternalAuthSettings(JobSettings):
    pod_namespace: str | None = Field(None, description="Namespace of the Secrets (unset: the pod's own namespace)")
    external_auth_client_id_secret: str = Field("coder-github-oauth-client-id", description="Source Secret with the OAuth client id")
    external_auth_client_secret_secret: str = Field(
        "coder-github-oauth-client-secret", description="Source Secret with the OAuth client secret"
    )
    external_auth_target_secret: str = Field("coder-external-auth-github", description="Secret coderd reads with envFrom")
    external_auth_id: str = Field("github", description="External auth provider id (CODER_EXTERNAL_AUTH_0_ID)")
    coder_deployment: str | None = Field(None, description="coderd Deployment to roll when the content changes")
    external_auth_source_timeout: float = Field(
        300, ge=0, le=86400, description="Seconds to wait for source Secrets that do not exist yet (not delivered yet)")
    external_auth_adopt: bool = Field(False, json_schema_extra={"flag": "--adopt"},
                                      description="Take over a target Secret that coder-jobs did not create")

    @field_validator("external_auth_client_id_secret", "external_auth_client_secret_secret",
                     "external_auth_target_secret", "coder_deployment")
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        return value if value is None else _check(value, object_name_problem(value))

    @field_validator("external_auth_id")
    @classmethod
    def _provider_id(cls, value: str) -> str:
        return _check(value, validation.username_problem(value))  # coderd applies NameValid to ids


class ReapSettings(CoderSettings):
    # The policy inputs are parsed here, once, with every other setting, so one message names every
    # bad variable and the reaper gets typed values (jobs/reap_rules.py).
    reap_idle_after: reap_rules.IdleAfter = Field(
        "2h", validate_default=True,
        description="Stop running workspaces unused for this long (2h, 90m, 3600s; at least 5m)")
    reap_max_stops: int = Field(20, ge=0, le=10000, description="At most this many stop builds per run")
    reap_exempt: Annotated[reap_rules.ExemptGlobs, NoDecode] = Field(
        (), description="Comma list of owner/workspace globs never stopped")
    reap_max_workspaces_per_user: int | None = Field(None, ge=1, description="Report owners with more workspaces")
    reap_max_running_per_user: int | None = Field(None, ge=1, description="Report (or stop) owners with more running")
    reap_quota_action: Literal["report", "stop"] = Field("report", description="What to do with running-quota violations")
    reap_rules_file: Annotated[reap_rules.RulesFileSetting, NoDecode] | None = Field(
        None, description="YAML rules overriding idle-after and exemption")
    reap_workspace_namespace: str | None = Field(None, description="Namespace of workspace pods (quota and orphan checks)")
    reap_concurrency: int = Field(4, ge=1, le=64, description="Stop builds issued in parallel")
    reap_page_size: int = Field(500, ge=1, le=10000, description="Workspaces per list request")
    reap_delete_orphans: bool = Field(
        False, json_schema_extra={"flag": "--delete-orphans"},
        description="Delete orphaned workspace objects in REAP_WORKSPACE_NAMESPACE: pods, Deployments and "
                    "coder-<id>-credentials Secrets of workspaces coderd does not know or has stopped "
                    "(default: report only)")

    @classmethod
    def cross_checks(cls, raw: Mapping[str, Any]) -> list[str]:
        problems = super().cross_checks(raw)
        try:
            delete_orphans = TypeAdapter(bool).validate_python(raw.get("REAP_DELETE_ORPHANS") or False)
        except ValidationError:
            delete_orphans = False  # the field's own check names it
        if delete_orphans and not raw.get("REAP_WORKSPACE_NAMESPACE"):
            problems.append("REAP_DELETE_ORPHANS (--delete-orphans): needs REAP_WORKSPACE_NAMESPACE, the namespace "
                            "of the workspace pods")
        return problems

    def policy(self) -> reap_rules.Policy:
        return reap_rules.Policy(idle_after=self.reap_idle_after, exempt=self.reap_exempt,
                                 rules=self.reap_rules_file.rules if self.reap_rules_file else ())


ALL_SETTINGS: tuple[type[JobSettings], ...] = (
    CoderSettings,
    BootstrapSettings,
    TemplatesSettings,
    RecoverSettings,
    DoctorSettings,
    ExternalAuthSettings,
    ReapSettings,
)

# Variables read outside the settings classes (Kubernetes' own conventions).
OTHER_ENV_VARS = {"KUBERNETES_SERVICE_HOST", "KUBECONFIG", "CODER_JOBS_LOG_FORMAT"}


def env_name(field: str) -> str:
    return field.upper()


def known_env_vars() -> set[str]:
    names = {env_name(f) for cls in ALL_SETTINGS for f in cls.model_fields}
    return names | OTHER_ENV_VARS


def load(cls: type[JobSettings], overrides: Mapping[str, Any] | None = None) -> Any:
    """Build settings from env + overrides, or raise ConfigError naming every bad variable."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = {k.upper(): v for k, v in os.environ.items()}
    raw.update({env_name(k): v for k, v in given.items()})
    problems: list[str] = []
    settings = None
    try:
        settings = cls(**given)
    except ValidationError as exc:
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{env_name(loc)}: {'is required' if err['type'] == 'missing' else msg}")
    problems.extend(cls.cross_checks(raw))
    if problems:
        raise ConfigError("invalid configuration", problems)
    return settings
