"""bootstrap-admin: create Coder's first user, so humans land on SSO and never on /setup.

Observe `GET /users/first` (and, before a create, whether coderd demands a setup token); plan:
create the user, or verify that the configured credentials still log in. Apply: `POST
/users/first` (trial off), where a 409 means another run won the race: the job reads again and
plans again, and verifies.

Only the create path checks the values against coderd's rules before sending (exit 2, nothing
written): verifying an existing admin's login lets coderd judge the credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

from jobs import retry, validation
from jobs.coder import CoderClient, client_from_settings, is_transient, refused_for_setup_token
from jobs.context import RunContext
from jobs.errors import EXIT_OK, RUNBOOK_SETUP_TOKEN, CoderAPIError, ConcurrentChange, ConfigError, JobError, credentials_rejected_message
from jobs.log import summary
from jobs.plan import Action, Plan, log_plan
from jobs.settings import BootstrapSettings

SETUP_TOKEN_MISSING = (
    "CODER_SETUP_TOKEN: coderd requires a setup token to create the first user, and none is configured. "
    "coderd prints the one-time token in its log when it starts with no users. Put it in the bootstrap Secret "
    "under the key the chart value `bootstrapAdmin.setupTokenKey` names (default `setup-token`); the chart "
    f"hands it to the job as CODER_SETUP_TOKEN ({RUNBOOK_SETUP_TOKEN})"
)


@dataclass(frozen=True, kw_only=True)
class CreateFirstUser(Action):
    kind: Literal["create-first-user"] = field(default="create-first-user", init=False)


@dataclass(frozen=True, kw_only=True)
class VerifyCredentials(Action):
    """Writes nothing, but apply logs in: the run fails when the configured credentials do not."""

    kind: Literal["verify-credentials"] = field(default="verify-credentials", init=False)
    writes: bool = field(default=False, init=False)


BootstrapAction = CreateFirstUser | VerifyCredentials


def plan(first_user_exists: bool, settings: BootstrapSettings, setup_token_required: bool = False) -> Plan[BootstrapAction]:
    """Create the first user, or check that the configured credentials log in to the existing one.
    Raises ConfigError when coderd's own rules would refuse the user we would create, or when
    coderd demands a setup token (`setup_token_required`) and none is configured."""
    if first_user_exists:
        return Plan((VerifyCredentials(target=f"user/{settings.coder_admin_email}", reason="a first user already exists"),))
    problems = first_user_problems(settings)
    if setup_token_required and not settings.coder_setup_token:
        problems.append(SETUP_TOKEN_MISSING)
    if problems:
        raise ConfigError("coderd would refuse to create the first user", problems)
    details: dict[str, object] = {"username": settings.coder_admin_username, "email": settings.coder_admin_email, "trial": False}
    if settings.coder_setup_token:
        details["setup_token"] = "set"
    return Plan((CreateFirstUser(target=f"user/{settings.coder_admin_username}", reason="coderd has no users yet",
                                 details=details),))


def first_user_problems(settings: BootstrapSettings) -> list[str]:
    """coderd's own rules for the first user (BEHAVIOR.md §2), named by variable, never the value."""
    checks = (
        ("CODER_ADMIN_USERNAME", validation.username_problem(settings.coder_admin_username)),
        ("CODER_ADMIN_EMAIL", validation.email_problem(settings.coder_admin_email)),
        ("CODER_ADMIN_NAME", validation.real_name_problem(settings.coder_admin_name)),
        ("CODER_ADMIN_PASSWORD", validation.password_problem(settings.coder_admin_password.get_secret_value())),
    )
    return [f"{name}: {problem}" for name, problem in checks if problem]


def first_user_body(settings: BootstrapSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": settings.coder_admin_email,
        "username": settings.coder_admin_username,
        "password": settings.coder_admin_password.get_secret_value(),
        # The release image calls Coder's licensor for a trial and fails air-gapped (BEHAVIOR.md §2).
        "trial": False,
    }
    if settings.coder_admin_name:
        body["name"] = settings.coder_admin_name
    if settings.coder_setup_token:
        body["setup_token"] = settings.coder_setup_token.get_secret_value()
    return body


def create_first_user(client: CoderClient, settings: BootstrapSettings, log: Any) -> None:
    """Raises ConcurrentChange when another run created the first user meanwhile (409, or the race's 500):
    the next pass reads that and verifies the credentials instead."""
    try:
        created = client.create_first_user(first_user_body(settings))
    except CoderAPIError as err:
        if err.status == 409:
            log.info("another run created the first user first", username=settings.coder_admin_username)
            raise ConcurrentChange("another run created the first user first") from None
        # Two calls at the same instant both pass coderd's 409 check; the loser's insert hits a
        # unique index and answers 500 (BEHAVIOR.md §11). A first user existing now means that.
        if err.status == 500 and client.first_user_exists():
            log.info("another run created the first user first", username=settings.coder_admin_username,
                     answer=err.describe())
            raise ConcurrentChange("another run created the first user first") from None
        if refused_for_setup_token(err):
            if not settings.coder_setup_token:
                raise ConfigError(SETUP_TOKEN_MISSING + f"; coderd: {err.describe()}") from None
            raise JobError(
                "coderd refused CODER_SETUP_TOKEN: it is not the token this coderd printed, or it was used already "
                f"(coderd: {err.describe()}). Nothing was created. Copy the current token from coderd's start-up log "
                f"into the Secret, or restart coderd for a new one ({RUNBOOK_SETUP_TOKEN})") from None
        if err.status == 400:
            raise ConfigError(f"coderd rejected the first user: {err.describe()}") from None
        raise
    log.info("created the first user", user_id=created.user_id, organization_id=created.organization_id,
             username=settings.coder_admin_username)


def verify_credentials(client: CoderClient, settings: BootstrapSettings, log: Any) -> None:
    try:
        token = client.password_login(settings.coder_admin_email, settings.coder_admin_password.get_secret_value())
    except CoderAPIError as err:
        if err.status in (400, 401, 403):
            raise JobError(credentials_rejected_message(client.url, err.message or str(err.status))) from None
        raise
    client.adopt_login(token)  # later steps (recover) reuse it; logged out when the client closes
    log.info("first user exists and the configured credentials log in", email=settings.coder_admin_email)


def converge(client: CoderClient, settings: BootstrapSettings, ctx: RunContext) -> Plan[BootstrapAction]:
    return retry.replan(lambda: _converge_once(client, settings, ctx), transient=is_transient,
                        deadline=settings.coder_ready_timeout, log=ctx.log, what="first user")


def _converge_once(client: CoderClient, settings: BootstrapSettings, ctx: RunContext) -> Plan[BootstrapAction]:
    exists = client.first_user_exists()
    p = plan(exists, settings, setup_token_required=not exists and client.setup_token_required())
    log_plan(ctx.log, p, ctx.dry_run)
    if ctx.dry_run:
        return p
    for action in p:
        match action:
            case CreateFirstUser():
                create_first_user(client, settings, ctx.log)
            case VerifyCredentials():
                verify_credentials(client, settings, ctx.log)
            case _:
                assert_never(action)
    return p


def run(settings: BootstrapSettings, ctx: RunContext) -> int:
    with client_from_settings(settings) as client:
        client.wait_ready()
        actions = converge(client, settings, ctx)
    summary(ctx.log, checked=len(actions), changed=actions.writes, dry_run=ctx.dry_run)
    return EXIT_OK
