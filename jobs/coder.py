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
import random
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, TypeVar

import httpx
from pydantic import BaseModel
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from jobs import __version__
from jobs.errors import (CoderAPIError, CoderUnavailable, JobError, connection_cause, credentials_rejected_message,
                         token_rejected_message, unreachable_message, what_to_check)
from jobs.log import get_logger
from jobs.models import (
    BuildInfo,
    Organization,
    ProvisionerJobLog,
    Template,
    TemplateVersion,
    TemplateVersionVariable,
    User,
    Workspace,
    WorkspaceBuild,
)

M = TypeVar("M", bound=BaseModel)

RETRYABLE_STATUS = {502, 503, 504}
_SIGNED_OUT = "You are signed out or your session has expired"
_DB_OUTAGE = "An internal error occurred"


class _Transient(Exception):
    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


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
        self.ready_timeout = ready_timeout
        self._sleep = sleep
        self.server_date: datetime | None = None
        self.request_count = 0
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

    def __enter__(self) -> "CoderClient":
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
        relogged = False
        while True:
            response = self._send_with_retries(method, path, json, params, content, headers, auth, safe,
                                               self.ready_timeout if deadline is None else deadline)
            if response.status_code == 401 and auth and not relogged and self._can_login() and self._is_signed_out(response):
                self.log.info("session rejected, logging in again", path=path)
                self._token = None
                self.login()
                relogged = True
                continue
            if response.status_code == 401 and auth and not self._can_login() and _DB_OUTAGE not in response.text:
                raise JobError(token_rejected_message(self.url, error_from_response(method, path, response).message or "HTTP 401"))
            if response.status_code not in ok:
                raise error_from_response(method, path, response)
            return response

    def _send_with_retries(self, method, path, json, params, content, headers, auth, safe, deadline) -> httpx.Response:
        retrying = Retrying(
            stop=stop_before_delay(deadline),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._before_sleep(method, path),
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(method, path, json, params, content, headers, auth, safe)
        except _Transient as exc:
            raise CoderUnavailable(
                f"{method} {path} at {self.url} kept failing for {deadline:g}s (CODER_READY_TIMEOUT): {exc}{what_to_check(str(exc))}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_once(self, method, path, json, params, content, headers, auth, safe) -> httpx.Response:
        if auth and not self._token:
            self.login()
        all_headers = dict(headers or {})
        if auth and self._token:
            all_headers["Coder-Session-Token"] = self._token
        # No cookie jar: coderd's CSRF check rejects a login cookie next to another token.
        self._http.cookies.clear()
        self.request_count += 1
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

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential_jitter(multiplier=0.25, max=8.0, jitter=0.5)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return max(exc.retry_after, 0.05)
        return backoff

    def _before_sleep(self, method: str, path: str) -> Callable[[RetryCallState], None]:
        def log(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0
            self.log.warning("retrying", method=method, path=path, cause=str(exc), attempt=state.attempt_number, wait_s=round(wait, 2))

        return log

    def _note_date(self, response: httpx.Response) -> None:
        date = response.headers.get("Date")
        if date:
            try:
                self.server_date = email.utils.parsedate_to_datetime(date).astimezone(timezone.utc)
            except (TypeError, ValueError):
                pass

    @staticmethod
    def _is_signed_out(response: httpx.Response) -> bool:
        return _SIGNED_OUT in response.text

    def _can_login(self) -> bool:
        return bool(self._email and self._password)

    def get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params or None).json())

    def get_list(self, path: str, model: type[M], **params: Any) -> list[M]:
        return [model.model_validate(item) for item in self.request("GET", path, params=params or None).json()]

    # -- readiness and auth --------------------------------------------------
    def wait_ready(self) -> BuildInfo:
        """Poll until coderd answers, exponential backoff with jitter, up to ready_timeout."""
        deadline = time.monotonic() + self.ready_timeout
        attempt, last = 0, "no answer yet"
        while True:
            try:
                response = self._http.get("/api/v2/buildinfo", timeout=httpx.Timeout(5.0))
                self._note_date(response)
                if response.status_code == 200 and response.headers.get("X-Coder-Build-Version") is not None:
                    info = BuildInfo.model_validate(response.json())
                    if attempt:
                        self.log.info("coderd is ready", url=self.url, version=info.version, attempts=attempt + 1)
                    return info
                last = f"HTTP {response.status_code}"
                if response.status_code == 404:
                    last += " without X-Coder-Build-Version (is this a Coder server?)"
            except httpx.TransportError as exc:
                last = connection_cause(exc)
            except ValueError:
                last = "buildinfo was not JSON"
            attempt += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CoderUnavailable(unreachable_message(self.url, self.ready_timeout, last))
            delay = min(8.0, 0.25 * 2 ** min(attempt, 6)) * (0.5 + random.random())
            if attempt == 1 or attempt % 5 == 0:
                self.log.info("waiting for coderd", url=self.url, last_error=last, remaining_s=round(remaining, 1))
            self._sleep(min(delay, max(remaining, 0.01)))

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
        retrying = Retrying(stop=stop_after_attempt(4) | stop_before_delay(deadline),
                            wait=wait_exponential_jitter(multiplier=0.1, max=2.0),
                            retry=retry_if_exception(lambda e: isinstance(e, CoderAPIError) and e.status >= 500),
                            sleep=self._sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self.request("POST", "/api/v2/users/logout", headers={"Coder-Session-Token": token}, auth=False,
                                 safe=True, ok=(200, 401), deadline=deadline)
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
                raise JobError(credentials_rejected_message(self.url, err.message or str(err.status))) from None
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

    def create_first_user(self, body: dict[str, Any]) -> dict[str, Any]:
        # Safe to repeat: a repeat after success answers 409, which the caller handles.
        return self.request("POST", "/api/v2/users/first", json=body, auth=False, safe=True, ok=(201,)).json()

    def external_auth_providers(self) -> list[str]:
        """Ids of the external auth providers coderd has configured (BEHAVIOR.md §11)."""
        body = self.request("GET", "/api/v2/external-auth").json()
        ids = [p.get("id") if isinstance(p, dict) else p for p in (body.get("providers") or [])]
        return [i for i in ids if isinstance(i, str)]

    def me(self) -> User:
        return self.get("/api/v2/users/me", User)

    def organization(self, name: str) -> Organization:
        return self.get(f"/api/v2/organizations/{name}", Organization)

    # -- files, versions, templates ------------------------------------------
    def upload(self, data: bytes, content_type: str = "application/x-tar") -> str:
        # Safe to repeat: coderd deduplicates identical uploads (200 with the same id).
        response = self.request("POST", "/api/v2/files", content=data, headers={"Content-Type": content_type}, safe=True)
        return str(response.json()["hash"])

    def download(self, file_id: str) -> bytes:
        return self.request("GET", f"/api/v2/files/{file_id}", headers={"Accept": "application/x-tar"}).content

    def template(self, org_id: str, name: str) -> Template | None:
        response = self.request("GET", f"/api/v2/organizations/{org_id}/templates/{name}", ok=(200, 404))
        if response.status_code == 404:
            return None
        return Template.model_validate(response.json())

    def template_version(self, version_id: str) -> TemplateVersion:
        return self.get(f"/api/v2/templateversions/{version_id}", TemplateVersion)

    def template_version_by_name(self, template_id: str, name: str) -> TemplateVersion | None:
        response = self.request("GET", f"/api/v2/templates/{template_id}/versions/{name}", ok=(200, 404))
        return None if response.status_code == 404 else TemplateVersion.model_validate(response.json())

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
    def workspaces_page(self, q: str, limit: int, offset: int) -> tuple[list[Workspace], int]:
        body = self.request("GET", "/api/v2/workspaces", params={"q": q, "limit": limit, "offset": offset}).json()
        return [Workspace.model_validate(w) for w in body.get("workspaces") or []], int(body.get("count") or 0)

    def iter_workspaces(self, q: str, page_size: int = 500) -> Iterator[Workspace]:
        """Every workspace matching q, one page in memory at a time.

        coderd's order shifts while workspaces change state (BEHAVIOR.md §7): a row can move
        across a page boundary between two requests. Callers read everything before acting,
        and tolerate the rare duplicate or miss; the next run sees it.
        """
        offset = 0
        while True:
            page, count = self.workspaces_page(q, page_size, offset)
            yield from page
            offset += len(page)
            if not page or offset >= count:
                return

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
