"""The three outcomes a job can have, as exceptions carrying their exit code."""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_NOT_CONVERGED = 1
EXIT_BAD_INPUT = 2
EXIT_COULD_NOT_CHECK = 3  # doctor only: coderd did not let it look, so nothing is known about drift


class JobError(Exception):
    """A failure to converge: the API is down past its deadline, a build failed, ..."""

    exit_code = EXIT_NOT_CONVERGED


class ConfigError(JobError):
    """Invalid configuration or input. Raised before anything is written."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        full = message if not self.problems else message + ": " + "; ".join(self.problems)
        super().__init__(full)


class TemplateError(JobError):
    """One template could not be converged (a failed build, a provider coderd lacks, ...);
    the other templates still are, and the run exits 1."""


class Terminated(JobError):
    """SIGTERM (Kubernetes activeDeadlineSeconds, a pod eviction): stop now, exit 1."""


class CoderAPIError(JobError):
    """coderd answered with an error. Carries Coder's own message, detail and validations."""

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        message: str = "",
        detail: str = "",
        validations: list[dict[str, Any]] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.detail = detail
        self.validations = validations or []
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.method} {self.path} -> HTTP {self.status}"
        if self.message:
            text += f": {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        if self.validations:
            text += "; " + "; ".join(f"{v.get('field')}: {v.get('detail')}" for v in self.validations)
        return text

    def field_names(self) -> set[str]:
        return {str(v.get("field")) for v in self.validations}


class CoderUnavailable(JobError):
    """coderd did not answer (or kept answering 5xx) until the deadline."""


# ------------------------------------------------------------------ messages that say what to check
# Pure: they take what the client saw (an exception chain, coderd's answer) and return the text
# an on-call engineer reads, with the RUNBOOK section to go to. No httpx here: only the Coder
# client imports it, so causes are recognised by the standard library's exceptions and texts.

RUNBOOK_UNREACHABLE = "RUNBOOK.md section 10, 'coderd unreachable'"
RUNBOOK_CREDENTIALS = "RUNBOOK.md section 3, 'First user exists but the credentials are rejected'"
RUNBOOK_SETUP_TOKEN = "RUNBOOK.md section 3a, 'coderd asks for a setup token'"

REFUSED = "connection refused"
DNS = "DNS lookup failed"
TIMED_OUT = "timed out"

_WHAT_TO_CHECK = {
    REFUSED: "the host answered but nothing listens on that port: check that coderd's pods are running and ready "
             "and that the port in CODER_URL is the one coderd's Service exposes",
    DNS: "the host name in CODER_URL does not resolve: check it against coderd's Service "
         "(<service>.<namespace>.svc.cluster.local) and that the job's NetworkPolicy allows DNS",
    TIMED_OUT: "nothing answered in time: check that the job's NetworkPolicy egress allows coderd's Service, "
               "and that coderd is not overloaded",
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def connection_cause(exc: BaseException) -> str:
    """REFUSED, DNS or TIMED_OUT when the exception (or one it was raised from) says so, else
    the exception's own short description."""
    import socket

    for err in _chain(exc):
        text = str(err).lower()
        if isinstance(err, socket.gaierror) or any(
                t in text for t in ("name or service not known", "nodename nor servname", "name resolution",
                                    "getaddrinfo failed", "no address associated")):
            return DNS
        if isinstance(err, ConnectionRefusedError) or "connection refused" in text or "errno 111" in text:
            return REFUSED
        if isinstance(err, (TimeoutError, socket.timeout)) or "timeout" in type(err).__name__.lower() \
                or "timed out" in text:
            return TIMED_OUT
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


_FAILING = ("coderd (or a proxy in front of it) answers but fails: read coderd's log; it is starting, or cannot "
            "reach its database")


def what_to_check(cause: str) -> str:
    """" <What to check> (see RUNBOOK ...)" for a failure text naming a known cause, else ""."""
    check = next((c for known, c in _WHAT_TO_CHECK.items() if known in cause), None)
    if check is None and any(f"HTTP {s}" in cause for s in (500, 502, 503, 504)):
        check = _FAILING
    if check is None:
        return ""
    return f". {check[0].upper()}{check[1:]} (see {RUNBOOK_UNREACHABLE})"


def unreachable_message(url: str, waited_s: float, cause: str) -> str:
    """coderd never answered within CODER_READY_TIMEOUT: what failed, what to check, where to read on."""
    text = f"coderd at {url} did not become ready within {waited_s:g}s (CODER_READY_TIMEOUT); last error: {cause}"
    return text + (what_to_check(cause) or f" (see {RUNBOOK_UNREACHABLE})")


def credentials_rejected_message(url: str, coderd_said: str, token_refused: str | None = None) -> str:
    """coderd refused the admin's password login: the Secret and coderd's database disagree. Every
    job says this, bootstrap-admin's check of an existing first user included. `token_refused`: what
    coderd said to CODER_SESSION_TOKEN before the jobs fell back to the password."""
    first = f"coderd refused CODER_SESSION_TOKEN (coderd: {token_refused}), then " if token_refused else ""
    return (f"{first}coderd at {url} refused the login with CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD (coderd: {coderd_said}): "
            "the Secret no longer matches that admin in coderd's database. Either set the Secret to the admin's "
            "current credentials, or reset that user's password with `coder reset-password` "
            f"(see {RUNBOOK_CREDENTIALS})")


def token_rejected_message(url: str, coderd_said: str) -> str:
    """coderd refused CODER_SESSION_TOKEN (there is no password to log in with instead)."""
    return (f"coderd at {url} refused CODER_SESSION_TOKEN (coderd: {coderd_said}): it expired, was revoked, or "
            "belongs to a database that was reset. Create a new token with an explicit lifetime and put it in the "
            f"Secret, or unset it so the jobs log in with "
            f"CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD (the steps: {RUNBOOK_CREDENTIALS})")


def session_refused_message(url: str, method: str, path: str, coderd_said: str) -> str:
    """coderd signed out the session CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD had just logged in for:
    logging in yet again would loop, so the run stops and says which credentials were in use."""
    return (f"{method} {path} at {url}: coderd refused the session that CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD had "
            f"just logged in for (coderd: {coderd_said}). Its database may have been reset during the run, or that "
            f"admin was suspended or lost its role; the next run logs in afresh (see {RUNBOOK_CREDENTIALS})")


def yaml_problem(exc: Exception, text: str) -> str:
    """A YAML file's parse error on one line: where (line, column), what, PyYAML's context and the
    offending line itself. PyYAML's own str() spans several lines, with a caret drawing."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        # PyYAML's constructors also raise ValueError (2001-13-01), KeyError, RecursionError, ...
        return " ".join(f"{type(exc).__name__}: {str(exc)[:200]}".split())
    out = f"at line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', None) or 'cannot parse'}"
    context, where = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context:
        out += f" ({context}" + (f" at line {where.line + 1}" if where is not None else "") + ")"
    lines = text.splitlines()
    if 0 <= mark.line < len(lines):
        out += f"; line {mark.line + 1} is {lines[mark.line][:120]!r}"
    return out


class ConcurrentChange(JobError):
    """Someone else changed what a job read before its write landed (a 409 on a create, a stale
    resourceVersion): the job reads the state again and plans again (jobs.retry)."""
