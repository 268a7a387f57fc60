"""The Coder API client: prepare a request once, send it (the same object again for each repeat
that is safe), handle the answer; typed endpoint methods on top. Sessions are jobs/coder_session.py,
what coderd's answers mean jobs/coder_answers.py.

What is repeated (and nothing else), under the one retry policy (jobs/retry.py):
- connection errors: the request never reached coderd, so any method may be repeated;
- 429, honouring Retry-After: coderd rejected the request before handling it;
- 502/503/504, timeouts and dropped connections: only for requests marked safe to repeat
  (GETs, and writes that are idempotent by construction);
- a 401 caused by coderd's database outage (BEHAVIOR.md §1), again only when safe.
A 4xx is an answer, never repeated blindly.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel

from jobs import __version__, coder_versions, retry
from jobs.coder_answers import (
    error_from_response,
    is_database_outage,
    is_transient,
    is_unparsable_template,
    lost_upload_race,
    refused_for_setup_token,
    unconfigured_external_auth,
)
from jobs.coder_session import TOKEN_HEADER, CoderSession
from jobs.errors import CoderAPIError, CoderUnavailable, connection_cause, unreachable_message, what_to_check
from jobs.log import get_logger
from jobs.models import (
    AuthMethods,
    BuildInfo,
    CreatedFirstUser,
    Organization,
    ProvisionerJobLog,
    Template,
    TemplateVersion,
    TemplateVersionVariable,
    Workspace,
    WorkspaceBuild,
    WorkspacesPage,
)

if TYPE_CHECKING:
    from jobs.settings import CoderSettings

# The jobs ask coderd's answers through these, with the client they came from.
__all__ = ["CoderClient", "client_from_settings", "is_transient", "is_unparsable_template",
           "refused_for_setup_token", "unconfigured_external_auth"]

M = TypeVar("M", bound=BaseModel)

SAFE_METHODS = frozenset({"GET", "HEAD"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
READINESS_PROBE_TIMEOUT_S = 5.0
LOGOUT_DEADLINE_S = 10.0  # a coderd gone mid-run must not hold the exit for another CODER_READY_TIMEOUT


class _Transient(Exception):
    """Worth sending the same request again; `retry_after` (seconds) when coderd said when."""

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
        self.ready_timeout = ready_timeout
        self.build = BuildInfo()  # coderd's build info, once wait_ready has read it
        self.server_date: datetime | None = None  # coderd's clock, from the latest response's Date header
        self._sleep = sleep
        self._upload_lock = threading.Lock()  # one upload at a time: identical parallel uploads raced (see upload)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(request_timeout, connect=min(5.0, request_timeout)),
            transport=transport,
            headers={"User-Agent": f"coder-jobs/{__version__}", "Accept": "application/json"},
            # A jar that keeps nothing: coderd's CSRF check rejects a login cookie next to a token header.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            follow_redirects=False,
        )
        self.log = get_logger(component="coder-client")
        self.session = CoderSession(self, token=token, email=email, password=password, log=self.log)

    def close(self) -> None:
        try:
            self.session.logout()
        finally:
            self._http.close()

    def __enter__(self) -> CoderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prepare, send, handle -----------------------------------------------
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
    ) -> httpx.Response:
        """One call: the request is prepared once, sent under the rules above (`safe` defaults to
        the method being a read), and anything but a status in `ok` raises CoderAPIError."""
        request = self._http.build_request(method, path, json=json, params=params, content=content, headers=headers)
        return self.handle(request, self.send(request, auth=auth, safe=method in SAFE_METHODS if safe is None else safe),
                           ok)

    def send(self, request: httpx.Request, *, auth: bool, safe: bool, deadline: float | None = None) -> httpx.Response:
        """Send `request`, and the same request again while the rules above allow, for up to
        `deadline` seconds (default: CODER_READY_TIMEOUT)."""
        deadline = self.ready_timeout if deadline is None else deadline

        def log_retry(error: BaseException, attempt: int, wait: float) -> None:
            self.log.warning("retrying", method=request.method, path=request.url.path, cause=str(error),
                             attempt=attempt, wait_s=round(wait, 2))

        try:
            return retry.call(lambda: self._send_once(request, auth, safe), retry=lambda e: isinstance(e, _Transient),
                              deadline=deadline, sleep=self._sleep, on_retry=log_retry)
        except _Transient as exc:
            raise CoderUnavailable(
                f"{request.method} {request.url.path} at {self.url} kept failing for {deadline:g}s "
                f"(CODER_READY_TIMEOUT): {exc}{what_to_check(str(exc))}") from None

    def _send_once(self, request: httpx.Request, auth: bool, safe: bool) -> httpx.Response:
        try:
            response = self._http.send(request, auth=self.session if auth else None)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Transient(f"cannot connect: {connection_cause(exc)}") from None
        except httpx.TransportError as exc:
            if safe:
                raise _Transient(f"connection failed mid-request: {type(exc).__name__}") from None
            raise CoderUnavailable(
                f"{request.method} {request.url.path} at {self.url}: connection failed mid-request "
                f"({type(exc).__name__}); not repeated because the request may have been applied") from None
        self._note_date(response)
        if response.status_code == 429:
            after = _retry_after_seconds(response.headers.get("Retry-After"), time.time())
            raise _Transient("rate limited (429)", retry_after=after if after is not None else 1.0)
        if safe and response.status_code in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {response.status_code}")
        if safe and is_database_outage(response):
            raise _Transient("HTTP 401 caused by a coderd database error")
        return response

    @staticmethod
    def handle(request: httpx.Request, response: httpx.Response, ok: tuple[int, ...]) -> httpx.Response:
        if response.status_code not in ok:
            raise error_from_response(request, response)
        return response

    def _note_date(self, response: httpx.Response) -> None:
        date = _http_date(response.headers.get("Date"))
        if date is not None:
            self.server_date = date

    def _get(self, path: str, model: type[M], *, auth: bool = True, **params: Any) -> M:
        return model.model_validate(self.request("GET", path, params=params or None, auth=auth).json())

    def _get_list(self, path: str, model: type[M], **params: Any) -> list[M]:
        return [model.model_validate(item) for item in self.request("GET", path, params=params or None).json()]

    # -- readiness -----------------------------------------------------------
    def wait_ready(self) -> BuildInfo:
        """Poll until coderd answers its build info, up to CODER_READY_TIMEOUT (the last attempt at it)."""
        probe = self._http.build_request("GET", "/api/v2/buildinfo", timeout=httpx.Timeout(READINESS_PROBE_TIMEOUT_S))
        started = time.monotonic()

        def log_wait(error: BaseException, attempt: int, wait: float) -> None:
            if attempt == 1 or attempt % 5 == 0:
                remaining = self.ready_timeout - (time.monotonic() - started)
                self.log.info("waiting for coderd", url=self.url, last_error=str(error), remaining_s=round(remaining, 1))

        policy = retry.policy(retry=lambda e: isinstance(e, _NotReady), deadline=self.ready_timeout,
                              reach_deadline=True, sleep=self._sleep, on_retry=log_wait)
        try:
            info = policy(self._build_info, probe)
        except _NotReady as exc:
            raise CoderUnavailable(unreachable_message(self.url, self.ready_timeout, str(exc))) from None
        attempts = policy.statistics.get("attempt_number", 1)
        if attempts > 1:
            self.log.info("coderd is ready", url=self.url, version=info.version, attempts=attempts)
        if coder_versions.outside_range(info.version):
            self.log.warning(f"coderd {info.version} is outside the Coder versions coder-jobs supports "
                             f"({coder_versions.SUPPORTED_RANGE}); continuing", url=self.url)
        self.build = info
        return info

    def _build_info(self, probe: httpx.Request) -> BuildInfo:
        try:
            response = self._http.send(probe)
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

    @property
    def knows_parameter_flow(self) -> bool:
        return coder_versions.knows_parameter_flow(self.build.version)

    # -- sessions (the policy is jobs/coder_session.py) ----------------------
    def password_login(self, email: str, password: str) -> str:
        """POST /users/login; returns the session token. Raises CoderAPIError on 4xx."""
        response = self.request("POST", "/api/v2/users/login", json={"email": email, "password": password},
                                auth=False, safe=True, ok=(201, 200))
        return str(response.json()["session_token"])

    def adopt_login(self, token: str) -> None:
        """Use a session from a login made elsewhere (bootstrap-admin's check) as this client's own."""
        self.session.adopt(token)

    def revoke_session(self, token: str) -> None:
        """POST /users/logout for `token`, within LOGOUT_DEADLINE_S. Safe to repeat, even after a 500:
        a second logout of the same key answers 401 (done)."""
        deadline = min(self.ready_timeout, LOGOUT_DEADLINE_S)
        request = self._http.build_request("POST", "/api/v2/users/logout", headers={TOKEN_HEADER: token})
        retry.call(lambda: self.handle(request, self.send(request, auth=False, safe=True, deadline=deadline), (200, 401)),
                   retry=lambda e: isinstance(e, CoderAPIError) and e.status >= 500, attempts=4, deadline=deadline,
                   initial=0.1, maximum=2.0, jitter=1.0, sleep=self._sleep)

    # -- users and organizations ---------------------------------------------
    def first_user_exists(self) -> bool:
        response = self.request("GET", "/api/v2/users/first", auth=False, ok=(200, 404))
        if response.status_code == 404 and response.headers.get("X-Coder-Build-Version") is None:
            raise CoderAPIError("GET", "/api/v2/users/first", 404, "answered without X-Coder-Build-Version: not a Coder server")
        return response.status_code == 200

    def setup_token_required(self) -> bool:
        """Newer coderd releases can demand a setup token for the first user (GET /users/authmethods
        answers `setup_token_required`, docs: reference/api/users); older ones do not know the field."""
        return self._get("/api/v2/users/authmethods", AuthMethods, auth=False).setup_token_required

    def create_first_user(self, body: dict[str, Any]) -> CreatedFirstUser:
        # Safe to repeat: a repeat after success answers 409, which the caller handles.
        response = self.request("POST", "/api/v2/users/first", json=body, auth=False, safe=True, ok=(201,))
        return CreatedFirstUser.model_validate(response.json())

    def external_auth_providers(self) -> list[str]:
        """Ids of the external auth providers coderd has configured (BEHAVIOR.md §11)."""
        body = self.request("GET", "/api/v2/external-auth").json()
        ids = [p.get("id") if isinstance(p, dict) else p for p in (body.get("providers") or [])]
        return [i for i in ids if isinstance(i, str)]

    def organization(self, name: str) -> Organization:
        return self._get(f"/api/v2/organizations/{name}", Organization)

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
        return Template.model_validate(response.json()) if response.status_code == 200 else None

    def template_version(self, version_id: str) -> TemplateVersion:
        return self._get(f"/api/v2/templateversions/{version_id}", TemplateVersion)

    def template_versions(self, template_id: str) -> list[TemplateVersion]:
        return self._get_list(f"/api/v2/templates/{template_id}/versions", TemplateVersion)

    def template_version_variables(self, version_id: str) -> list[TemplateVersionVariable]:
        return self._get_list(f"/api/v2/templateversions/{version_id}/variables", TemplateVersionVariable)

    def cancel_template_version(self, version_id: str) -> None:
        try:
            self.request("PATCH", f"/api/v2/templateversions/{version_id}/cancel", safe=True)
        except CoderAPIError:
            pass  # best effort: it may have finished meanwhile

    def template_version_logs(self, version_id: str, after: int | None = None) -> list[ProvisionerJobLog]:
        params = {"after": after} if after is not None else {}
        return self._get_list(f"/api/v2/templateversions/{version_id}/logs", ProvisionerJobLog, **params)

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
            answer = self._get("/api/v2/workspaces", WorkspacesPage, q=q, limit=page_size, offset=offset)
            page = answer.workspaces or []
            yield page
            offset += len(page)
            if not page or offset >= answer.count:
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


def client_from_settings(settings: CoderSettings) -> CoderClient:
    """A client for any settings class derived from CoderSettings."""
    return CoderClient(
        str(settings.coder_url),
        token=settings.coder_session_token.get_secret_value() if settings.coder_session_token else None,
        email=settings.coder_admin_email,
        password=settings.coder_admin_password.get_secret_value() if settings.coder_admin_password else None,
        ready_timeout=settings.coder_ready_timeout,
        request_timeout=settings.coder_request_timeout,
    )
