"""The Coder API client: httpx underneath, tenacity for the retries that are safe.

What is retried (and nothing else):
- connection errors: the request never reached coderd, so any method may be repeated;
- 429, honouring Retry-After: coderd rejected the request before handling it;
- 502/503/504, timeouts and dropped connections: only for requests marked safe to repeat
  (GETs, and writes that are idempotent by construction);
- a 401 caused by coderd's database outage (BEHAVIOR.md §1), again only when safe.
A 4xx is an answer, never retried blindly. A 401 "signed out" triggers one re-login when we
logged in with a password ourselves.

Sessions: coderd keeps one API key row per password login and never purges it (BEHAVIOR.md
§11), so a session this client logged in for is revoked (`POST /users/logout`) when the client
is closed, whatever the outcome of the run. A CODER_SESSION_TOKEN is the operator's: never.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from jobs import __version__, coder_versions, retry
from jobs.errors import (
    CoderAPIError,
    CoderUnavailable,
    JobError,
    connection_cause,
    credentials_rejected_message,
    token_rejected_message,
    unreachable_message,
    what_to_check,
)
from jobs.log import get_logger
from jobs.models import (
    BuildInfo,
    Organization,
    ProvisionerJobLog,
    Template,
    TemplateVersion,
    TemplateVersionVariable,
    Workspace,
    WorkspaceBuild,
)

M = TypeVar("M", bound=BaseModel)

RETRYABLE_STATUS = {502, 503, 504}
READINESS_PROBE_TIMEOUT_S = 5.0

# -- what coderd's answers mean: its texts are matched here and nowhere else -------------
_SIGNED_OUT = "You are signed out or your session has expired"
_DB_OUTAGE = "An internal error occurred"
_NOT_CONFIGURED = re.compile(r'external auth provider "([^"]+)" is not configured')
# Two identical uploads at once could both pass coderd's dedup check; the second insert then hit
# the files table's unique (hash, created_by) index and answered 500 (coder/coder, fixed mid-2025;
# BEHAVIOR.md §12.3).
_UPLOAD_RACE = "files_hash_created_by_key"


def _text(err: CoderAPIError) -> str:
    return f"{err.message} {err.detail}".lower()


def is_unparsable_template(err: CoderAPIError) -> bool:
    """coderd answers 500 when it cannot parse a template's workspace tags: the same upload
    fails the same way every time."""
    return err.status == 500 and "workspace tags" in _text(err)


def is_transient(err: BaseException) -> bool:
    """A 5xx worth reading the state again for; not the ones that repeat deterministically."""
    if not isinstance(err, CoderAPIError) or err.status < 500:
        return False
    return "unauthorized" not in _text(err) and not is_unparsable_template(err)


def refused_for_setup_token(err: CoderAPIError) -> bool:
    """Newer coderd releases refuse the first user without a valid setup token (BEHAVIOR.md §12.1)."""
    text = _text(err)
    return err.status in (400, 401, 403) and (
        "setup token" in text or "setup_token" in text or "setup_token" in err.field_names())


def lost_upload_race(err: CoderAPIError) -> bool:
    """The same bytes were stored by another upload a moment earlier: already uploaded."""
    return err.status == 500 and _UPLOAD_RACE in _text(err)


def unconfigured_external_auth(job_error: str) -> list[str]:
    """Provider ids a failed template import names as not configured on coderd."""
    return _NOT_CONFIGURED.findall(job_error)


# -- the transport -----------------------------------------------------------------------
class _Transient(Exception):
    """Worth repeating the same request; `retry_after` (seconds) when coderd said when."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.retry_after = retry_after


class _NotReady(Exception):
    """coderd did not answer its build info yet."""


def _http_date(value: str | None) -> datetime | None:
    """An HTTP-date header value (Date, Retry-After) in UTC, None when absent or malformed."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = _http_date(value)
    return None if when is None else max(0.0, when.timestamp() - now)


def error_from_response(method: str, path: str, response: httpx.Response) -> CoderAPIError:
    message = detail = ""
    validations: list[dict] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or "")
        detail = str(body.get("detail") or "")
        validations = [v for v in body.get("validations") or [] if isinstance(v, dict)]
    elif response.text:
        message = response.text.strip()[:500]
    return CoderAPIError(method, path, response.status_code, message, detail, validations)


class CoderClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        email: str | None = None,
        password: str | None = None,
        ready_timeout: float = 300.0,
        request_timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._email = email
        self._password = password
        self._owns_session = False  # the token came from our own password login: revoke it on close
        self._token_refused: str | None = None  # what coderd said to CODER_SESSION_TOKEN, once it refused it
        self.build = BuildInfo()  # coderd's build info, once wait_ready has read it
        self._upload_lock = threading.Lock()  # one upload at a time: identical parallel uploads raced (see upload)
        self.ready_timeout = ready_timeout
        self._sleep = sleep
        self.server_date: datetime | None = None  # coderd's clock, from the latest response's Date header
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(request_timeout, connect=min(5.0, request_timeout)),
            transport=transport,
            headers={"User-Agent": f"coder-jobs/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )
        self.log = get_logger(component="coder-client")

    def close(self) -> None:
        try:
            if self._owns_session and self._token:
                self.logout()
        finally:
            self._http.close()

    def __enter__(self) -> CoderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level -----------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        safe: bool | None = None,
        ok: tuple[int, ...] = (200, 201),
        deadline: float | None = None,
    ) -> httpx.Response:
        """Send one request with the retry policy above; raise CoderAPIError unless status in `ok`.
        Retries stop after `deadline` seconds (default: CODER_READY_TIMEOUT)."""
        safe = method in {"GET", "HEAD"} if safe is None else safe
        deadline = self.ready_timeout if deadline is None else deadline
        response = self._send_with_retries(method, path, json, params, content, headers, auth, safe, deadline)
        if response.status_code == 401 and auth and self._can_login() and _SIGNED_OUT in response.text:
            # Once: a session rejected right after a fresh login is an answer, not a stale token.
            if self._token is not None and not self._owns_session:
                # The operator's token: a documented fallback (README), so a reset database that
                # killed the token still heals; said loudly, since the token needs replacing.
                self._token_refused = error_from_response(method, path, response).message or "HTTP 401"
                self.log.warning("coderd refused CODER_SESSION_TOKEN; logging in with CODER_ADMIN_EMAIL/"
                                 "CODER_ADMIN_PASSWORD instead. Replace or unset the token", path=path,
                                 coderd=self._token_refused)
            else:
                self.log.info("session rejected, logging in again", path=path)
            self._token = None
            self.login()
            response = self._send_with_retries(method, path, json, params, content, headers, auth, safe, deadline)
        if response.status_code == 401 and auth and not self._can_login() and _DB_OUTAGE not in response.text:
            raise JobError(token_rejected_message(self.url, error_from_response(method, path, response).message or "HTTP 401"))
        if response.status_code not in ok:
            raise error_from_response(method, path, response)
        return response

    def _send_with_retries(self, method: str, path: str, json: Any, params: dict[str, Any] | None,
                           content: bytes | None, headers: dict[str, str] | None, auth: bool, safe: bool,
                           deadline: float) -> httpx.Response:
        def log_retry(error: BaseException, attempt: int, wait: float) -> None:
            self.log.warning("retrying", method=method, path=path, cause=str(error), attempt=attempt, wait_s=round(wait, 2))

        try:
            return retry.call(lambda: self._send_once(method, path, json, params, content, headers, auth, safe),
                              retry=lambda e: isinstance(e, _Transient), deadline=deadline, sleep=self._sleep,
                              on_retry=log_retry)
        except _Transient as exc:
            raise CoderUnavailable(
                f"{method} {path} at {self.url} kept failing for {deadline:g}s (CODER_READY_TIMEOUT): {exc}{what_to_check(str(exc))}"
            ) from None

    def _send_once(self, method: str, path: str, json: Any, params: dict[str, Any] | None, content: bytes | None,
                   headers: dict[str, str] | None, auth: bool, safe: bool) -> httpx.Response:
        if auth and not self._token:
            self.login()
        all_headers = dict(headers or {})
        if auth and self._token:
            all_headers["Coder-Session-Token"] = self._token
        # No cookie jar: coderd's CSRF check rejects a login cookie next to another token.
        self._http.cookies.clear()
        try:
            response = self._http.request(method, path, json=json, params=params, content=content, headers=all_headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Transient(f"cannot connect: {connection_cause(exc)}") from None
        except httpx.TransportError as exc:
            if safe:
                raise _Transient(f"connection failed mid-request: {type(exc).__name__}") from None
            raise CoderUnavailable(
                f"{method} {path} at {self.url}: connection failed mid-request ({type(exc).__name__}); "
                "not repeated because the request may have been applied"
            ) from None
        self._note_date(response)
        status = response.status_code
        if status == 429:
            after = _retry_after_seconds(response.headers.get("Retry-After"), time.time())
            raise _Transient("rate limited (429)", retry_after=after if after is not None else 1.0)
        if safe and status in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {status}")
        if safe and status == 401 and _DB_OUTAGE in response.text:
            raise _Transient("HTTP 401 caused by a coderd database error")
        return response

    def _note_date(self, response: httpx.Response) -> None:
        date = _http_date(response.headers.get("Date"))
        if date is not None:
            self.server_date = date

    def _can_login(self) -> bool:
        return bool(self._email and self._password)

    def get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params or None).json())

    def get_list(self, path: str, model: type[M], **params: Any) -> list[M]:
        return [model.model_validate(item) for item in self.request("GET", path, params=params or None).json()]

    # -- readiness and auth --------------------------------------------------
    def wait_ready(self) -> BuildInfo:
        """Poll until coderd answers its build info, up to ready_timeout (the last attempt at it)."""
        started = time.monotonic()
        attempts = 0

        def probe() -> BuildInfo:
            nonlocal attempts
            attempts += 1
            try:
                response = self._http.get("/api/v2/buildinfo", timeout=httpx.Timeout(READINESS_PROBE_TIMEOUT_S))
            except httpx.TransportError as exc:
                raise _NotReady(connection_cause(exc)) from None
            self._note_date(response)
            if response.status_code == 200 and response.headers.get("X-Coder-Build-Version") is not None:
                try:
                    return BuildInfo.model_validate(response.json())
                except ValueError:
                    raise _NotReady("buildinfo was not JSON") from None
            if response.status_code == 404:
                raise _NotReady(f"HTTP {response.status_code} without X-Coder-Build-Version (is this a Coder server?)")
            raise _NotReady(f"HTTP {response.status_code}")

        def log_wait(error: BaseException, attempt: int, wait: float) -> None:
            if attempt == 1 or attempt % 5 == 0:
                remaining = self.ready_timeout - (time.monotonic() - started)
                self.log.info("waiting for coderd", url=self.url, last_error=str(error), remaining_s=round(remaining, 1))

        try:
            info = retry.call(probe, retry=lambda e: isinstance(e, _NotReady), deadline=self.ready_timeout,
                              reach_deadline=True, sleep=self._sleep, on_retry=log_wait)
        except _NotReady as exc:
            raise CoderUnavailable(unreachable_message(self.url, self.ready_timeout, str(exc))) from None
        if attempts > 1:
            self.log.info("coderd is ready", url=self.url, version=info.version, attempts=attempts)
        if coder_versions.outside_range(info.version):
            self.log.warning(f"coderd {info.version} is outside the Coder versions coder-jobs supports "
                             f"({coder_versions.SUPPORTED_RANGE}); continuing", url=self.url)
        self.build = info
        return info

    @property
    def knows_parameter_flow(self) -> bool:
        return coder_versions.knows_parameter_flow(self.build.version)

    def adopt_login(self, token: str) -> None:
        """A session from a password login made elsewhere (bootstrap-admin's check): later steps
        use it instead of logging in again; when we already hold a token, it is revoked at once."""
        if not self._token:
            self._token = token
            self._owns_session = True
        else:
            self.logout(token)

    def logout(self, token: str | None = None) -> None:
        """Revoke a session (ours by default). Never raises: a failure is logged, the run's own
        outcome stands. Bounded, so a coderd gone mid-run does not hold the exit for another
        CODER_READY_TIMEOUT."""
        token = token or self._token
        if token is None:
            return
        if token == self._token:
            self._token, self._owns_session = None, False
        deadline = min(self.ready_timeout, 10.0)
        # Safe to repeat, even after a 500: a second logout of the same key answers 401 (done).
        try:
            retry.call(lambda: self.request("POST", "/api/v2/users/logout", headers={"Coder-Session-Token": token},
                                            auth=False, safe=True, ok=(200, 401), deadline=deadline),
                       retry=lambda e: isinstance(e, CoderAPIError) and e.status >= 500, attempts=4, deadline=deadline,
                       initial=0.1, maximum=2.0, jitter=1.0, sleep=self._sleep)
        except JobError as err:
            self.log.warning("could not revoke the login session; coderd keeps it until it expires", cause=str(err))

    def login(self) -> None:
        if not self._can_login():
            raise CoderAPIError("POST", "/api/v2/users/login", 401, "no credentials to log in with")
        try:
            self._token = self.password_login(self._email or "", self._password or "")
        except CoderAPIError as err:
            # "Incorrect email or password" would send the operator after the credentials, when
            # the cause is a coderd with no users at all (a new or reset database, even mid-run).
            if err.status == 401 and not self.first_user_exists():
                raise JobError(f"coderd at {self.url} has no users: its database is new or was reset "
                               f"(login answered: {err.message or err.status}); run `coder-jobs recover`") from None
            if err.status in (400, 401, 403):
                raise JobError(credentials_rejected_message(self.url, err.message or str(err.status),
                                                            self._token_refused)) from None
            raise
        self._owns_session = True

    def password_login(self, email: str, password: str) -> str:
        """POST /users/login; returns the session token. Raises CoderAPIError on 4xx."""
        response = self.request(
            "POST", "/api/v2/users/login", json={"email": email, "password": password}, auth=False, safe=True, ok=(201, 200)
        )
        return str(response.json()["session_token"])

    # -- users and organizations ---------------------------------------------
    def first_user_exists(self) -> bool:
        response = self.request("GET", "/api/v2/users/first", auth=False, ok=(200, 404))
        if response.status_code == 404 and response.headers.get("X-Coder-Build-Version") is None:
            raise CoderAPIError("GET", "/api/v2/users/first", 404, "answered without X-Coder-Build-Version: not a Coder server")
        return response.status_code == 200

    def setup_token_required(self) -> bool:
        """Newer coderd releases can demand a setup token for the first user (GET /users/authmethods
        answers `setup_token_required`, docs: reference/api/users); older ones do not know the field."""
        body = self.request("GET", "/api/v2/users/authmethods", auth=False).json()
        return isinstance(body, dict) and body.get("setup_token_required") is True

    def create_first_user(self, body: dict[str, Any]) -> dict[str, Any]:
        # Safe to repeat: a repeat after success answers 409, which the caller handles.
        return self.request("POST", "/api/v2/users/first", json=body, auth=False, safe=True, ok=(201,)).json()

    def external_auth_providers(self) -> list[str]:
        """Ids of the external auth providers coderd has configured (BEHAVIOR.md §11)."""
        body = self.request("GET", "/api/v2/external-auth").json()
        ids = [p.get("id") if isinstance(p, dict) else p for p in (body.get("providers") or [])]
        return [i for i in ids if isinstance(i, str)]

    def organization(self, name: str) -> Organization:
        return self.get(f"/api/v2/organizations/{name}", Organization)

    # -- files, versions, templates ------------------------------------------
    def upload(self, data: bytes, content_type: str = "application/x-tar") -> str:
        # Safe to repeat: coderd deduplicates identical uploads (200 with the same id). Serialised,
        # so this process never races itself; a race lost to another process answers 500 naming the
        # files index, which means the bytes are stored: asking again gets their id (the dedup 200).
        with self._upload_lock:
            for attempt in (1, 2):
                try:
                    response = self.request("POST", "/api/v2/files", content=data,
                                            headers={"Content-Type": content_type}, safe=True)
                    return str(response.json()["hash"])
                except CoderAPIError as err:
                    if attempt == 2 or not lost_upload_race(err):
                        raise
                    self.log.info("identical upload stored meanwhile; asking for its id", answer=err.describe())
        raise AssertionError("unreachable")

    def download(self, file_id: str) -> bytes:
        return self.request("GET", f"/api/v2/files/{file_id}", headers={"Accept": "application/x-tar"}).content

    def template(self, org_id: str, name: str) -> Template | None:
        response = self.request("GET", f"/api/v2/organizations/{org_id}/templates/{name}", ok=(200, 404))
        if response.status_code == 404:
            return None
        return Template.model_validate(response.json())

    def template_version(self, version_id: str) -> TemplateVersion:
        return self.get(f"/api/v2/templateversions/{version_id}", TemplateVersion)

    def template_versions(self, template_id: str) -> list[TemplateVersion]:
        return self.get_list(f"/api/v2/templates/{template_id}/versions", TemplateVersion)

    def template_version_variables(self, version_id: str) -> list[TemplateVersionVariable]:
        return self.get_list(f"/api/v2/templateversions/{version_id}/variables", TemplateVersionVariable)

    def cancel_template_version(self, version_id: str) -> None:
        try:
            self.request("PATCH", f"/api/v2/templateversions/{version_id}/cancel", safe=True)
        except CoderAPIError:
            pass  # best effort: it may have finished meanwhile

    def template_version_logs(self, version_id: str, after: int | None = None) -> list[ProvisionerJobLog]:
        params = {"after": after} if after is not None else {}
        return self.get_list(f"/api/v2/templateversions/{version_id}/logs", ProvisionerJobLog, **params)

    def create_template_version(self, org_id: str, body: dict[str, Any]) -> TemplateVersion:
        response = self.request("POST", f"/api/v2/organizations/{org_id}/templateversions", json=body, safe=False, ok=(201,))
        return TemplateVersion.model_validate(response.json())

    def create_template(self, org_id: str, body: dict[str, Any]) -> Template:
        response = self.request("POST", f"/api/v2/organizations/{org_id}/templates", json=body, safe=False, ok=(201, 200))
        return Template.model_validate(response.json())

    def activate_version(self, template_id: str, version_id: str) -> None:
        self.request("PATCH", f"/api/v2/templates/{template_id}/versions", json={"id": version_id}, safe=True)

    def update_template_meta(self, template_id: str, body: dict[str, Any]) -> bool:
        """PATCH /templates/{id}; False when coderd says 304 (nothing changed)."""
        response = self.request("PATCH", f"/api/v2/templates/{template_id}", json=body, safe=True, ok=(200, 304))
        return response.status_code == 200

    # -- workspaces ----------------------------------------------------------
    def workspace_pages(self, q: str, page_size: int = 500) -> Iterator[list[Workspace]]:
        """Every workspace matching q, one page (one request) at a time.

        coderd's order shifts while workspaces change state (BEHAVIOR.md §7): a row can move
        across a page boundary between two requests. Callers read everything before acting,
        and tolerate the rare duplicate or miss; the next run sees it.
        """
        offset = 0
        while True:
            body = self.request("GET", "/api/v2/workspaces", params={"q": q, "limit": page_size, "offset": offset}).json()
            page = [Workspace.model_validate(w) for w in body.get("workspaces") or []]
            count = int(body.get("count") or 0)
            yield page
            offset += len(page)
            if not page or offset >= count:
                return

    def workspace(self, workspace_id: str) -> Workspace | None:
        """One workspace read afresh; None when it is gone (404, or 410 once deleted)."""
        response = self.request("GET", f"/api/v2/workspaces/{workspace_id}", ok=(200, 404, 410))
        return Workspace.model_validate(response.json()) if response.status_code == 200 else None

    def stop_workspace(self, workspace_id: str) -> WorkspaceBuild:
        # Not repeated on a lost answer: a second stop would queue another build.
        response = self.request(
            "POST", f"/api/v2/workspaces/{workspace_id}/builds", json={"transition": "stop"}, safe=False, ok=(201, 200)
        )
        return WorkspaceBuild.model_validate(response.json())


def client_from_settings(settings: Any) -> CoderClient:
    """A client for any settings class derived from CoderSettings."""
    secret = lambda v: v.get_secret_value() if v is not None else None  # noqa: E731
    return CoderClient(
        str(settings.coder_url),
        token=secret(settings.coder_session_token),
        email=settings.coder_admin_email,
        password=secret(settings.coder_admin_password),
        ready_timeout=settings.coder_ready_timeout,
        request_timeout=settings.coder_request_timeout,
    )
