"""A fake coderd (Coder CE, `main` at a8c2586) on top of the loopback FakeServer.

Behaviour follows docs/BEHAVIOR.md (read from coderd's source); shapes follow swagger.json.
Route handlers live in mixins (coderd_users, coderd_templates, coderd_workspaces);
this module holds the class, its knobs, state, auth and the provisioner ticker.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

from fakes.base import WRITE_METHODS, FakeServer, Request, Response
from fakes.coderd_common import (
    HOUR_NS,
    NS,
    PREBUILDS_USER_ID,
    SIGNED_OUT,
    BadBody,
    go_time_string,
    msg,
    new_id,
    random_alnum,
)
from fakes.coderd_templates import TemplatesMixin
from fakes.coderd_users import UsersMixin
from fakes.coderd_versions import OLDEST, Behaviour
from fakes.coderd_workspaces import WorkspacesMixin

API = "/api/v2"
SESSION_COOKIE = "coder_session_token"
SESSION_HEADER = "Coder-Session-Token"

CSRF_MISMATCH = (
    'CSRF error encountered. Authentication via "coder_session_token" cookie and "Coder-Session-Token" header detected, '
    "but the values do not match. To resolve this issue ensure the values used in both match, or only use one of the "
    "authentication methods. You can also try clearing your cookies if this error persists."
)
CSRF_GENERIC = "Something is wrong with your CSRF token. Please refresh the page. If this error persists, try clearing your cookies."


class Ctx:
    """The authenticated caller of one request."""

    __slots__ = ("user", "key")

    def __init__(self, user: dict, key: dict):
        self.user = user
        self.key = key

    @property
    def is_owner(self) -> bool:
        return "owner" in self.user["roles"]

    @property
    def is_template_admin(self) -> bool:
        return bool({"owner", "template-admin"} & set(self.user["roles"]))


class FakeCoderd(UsersMixin, TemplatesMixin, WorkspacesMixin, FakeServer):
    def __init__(
        self,
        *,
        behaviour: Behaviour = OLDEST,
        version: str | None = None,
        trial_fails: bool = True,
        first_user_race_window: float = 0.05,
        setup_token: str | None = None,
        password_auth_disabled: bool = False,
        files_rate_limit: int | None = None,
        provisioner_delay: float = 0.05,
        provisioner_paused: bool = False,
        provisioners: int = 1,
        build_error: str | None = None,
        external_auth_providers: tuple[str, ...] | list[str] = (),
        session_duration_s: float = 24 * 3600,
        default_token_lifetime_s: float = 168 * 3600,
        max_token_lifetime_s: float = 876600 * 3600,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.version = version or behaviour.version
        self.upload_race_pending = False  # the next new upload loses a race (see race_next_upload)
        self.trial_fails = trial_fails
        self.first_user_race_window = first_user_race_window
        self.first_user_barrier: threading.Barrier | None = None
        self.setup_token = setup_token
        self.password_auth_disabled = password_auth_disabled
        self.files_rate_limit = files_rate_limit
        self.provisioner_delay = provisioner_delay
        self.provisioner_paused = provisioner_paused
        self.provisioners = provisioners
        self.build_error = build_error
        # Ids of the external auth providers coderd has configured (CODER_EXTERNAL_AUTH_<n>_ID,
        # BEHAVIOR.md §8). None by default, as a coderd started without those variables.
        self.external_auth_providers = list(external_auth_providers)
        self.session_duration_s = session_duration_s
        self.default_token_lifetime_s = default_token_lifetime_s
        self.max_token_lifetime_s = max_token_lifetime_s
        self.rng = random.Random(seed)
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self._wake = threading.Event()
        self._reset_state()
        self._register_routes()

    # -- state ----------------------------------------------------------------
    def _reset_state(self) -> None:
        with self.lock:
            now = self.now()
            self.deployment_id = new_id()
            self.users: dict[str, dict] = {}
            self.users_by_name: dict[str, str] = {}  # lower(username) -> id
            self.orgs: dict[str, dict] = {}
            self.keys: dict[str, dict] = {}  # key id -> key
            self.files: dict[str, dict] = {}
            self.files_by_hash: dict[tuple[str, str], str] = {}  # (user id, sha256) -> file id
            self.templates: dict[str, dict] = {}
            self.versions: dict[str, dict] = {}
            self.jobs: dict[str, dict] = {}
            self.active_jobs: dict[str, dict] = {}  # jobs the ticker still drives
            self.log_seq = 0
            self.workspaces: dict[str, Any] = {}
            self.builds: dict[str, Any] = {}
            self.ws_generation = 0
            self._ws_cache: Any = None
            self._files_hits: dict[str, list[float]] = {}
            org_id = new_id()
            self.default_org_id = org_id
            self.orgs[org_id] = {
                "id": org_id, "name": "coder", "display_name": "Coder", "description": "", "icon": "",
                "created_at": now, "updated_at": now, "is_default": True,
            }
            # Migration 000308 creates the `prebuilds` system user.
            self.users[PREBUILDS_USER_ID] = self._new_user_record(
                PREBUILDS_USER_ID, "prebuilds", "prebuilds@system", "", None, (), "none", system=True)
            self.users_by_name["prebuilds"] = PREBUILDS_USER_ID

    def reset_database(self) -> None:
        """Wipe everything, as recreating the Postgres volume would; the listener stays up."""
        self._reset_state()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> FakeCoderd:
        super().start()
        if self._ticker is None:
            self._ticker_stop.clear()
            self._ticker = threading.Thread(target=self._tick_loop, daemon=True, name="fake-coderd-provisioner")
            self._ticker.start()
        return self

    def stop(self) -> None:
        self._ticker_stop.set()
        self._wake.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
            self._ticker = None
        # serve_forever polls every 0.5 s; a connection wakes it so shutdown() returns at once.
        port = self._port

        def poke() -> None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                pass

        if self._httpd is not None:
            threading.Timer(0.01, poke).start()
        super().stop()

    def default_headers(self) -> dict[str, str]:
        return {"X-Coder-Build-Version": self.version}

    def not_found(self, request: Request) -> Response:
        if request.path.startswith(API + "/") or request.path == API:
            return Response(404, {"message": "Route not found."})
        return Response(404, "<!doctype html><html><body>Not found</body></html>", content_type="text/html; charset=utf-8")

    # -- routing helpers --------------------------------------------------------
    def api(self, method: str, pattern: str, fn: Callable[..., Response], *, auth: bool = True,
            csrf_exempt: bool = False, prefix: str = API) -> None:
        fake = self

        def handler(req: Request) -> Response:
            if method in WRITE_METHODS and not csrf_exempt and prefix.startswith("/api"):
                bad = fake._csrf(req)
                if bad is not None:
                    return bad
            try:
                if not auth:
                    return fn(req)
                ctx = fake._authenticate(req)
                if isinstance(ctx, Response):
                    return ctx
                return fn(req, ctx)
            except BadBody as exc:
                return exc.response

        self.route(method, prefix + pattern, handler)

    def _register_routes(self) -> None:
        self.route("GET", "/healthz", lambda req: Response(200, "OK"))
        self.api("GET", "/buildinfo", self._buildinfo, auth=False)
        self.api("GET", "/", lambda req: Response(200, {"message": "👋"}), auth=False)
        self.register_user_routes()
        self.register_template_routes()
        self.register_workspace_routes()

    def _buildinfo(self, req: Request) -> Response:
        commit = self.version.rsplit("+", 1)[-1]
        return Response(200, {
            "external_url": f"https://github.com/coder/coder/commit/{commit}",
            "version": self.version,
            "dashboard_url": self.url,
            "telemetry": False,
            "workspace_proxy": False,
            "agent_api_version": "2.4",
            "provisioner_api_version": "1.5",
            "upgrade_message": "",
            "deployment_id": self.deployment_id,
        })

    # -- auth -------------------------------------------------------------------
    @staticmethod
    def _cookie(req: Request) -> str | None:
        raw = req.header("cookie")
        if not raw:
            return None
        jar = SimpleCookie()
        try:
            jar.load(raw)
        except Exception:  # noqa: BLE001 - a bad cookie header is simply "no cookie"
            return None
        morsel = jar.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else None

    def _csrf(self, req: Request) -> Response | None:
        cookie = self._cookie(req)
        if cookie is None:
            return None
        header = req.header(SESSION_HEADER)
        if header == cookie or req.arg(SESSION_COOKIE) == cookie:
            return None
        if (req.header("authorization") or "").lower().startswith("bearer "):
            return None
        if header:
            return Response(400, CSRF_MISMATCH + "\n", content_type="text/plain; charset=utf-8")
        return Response(400, CSRF_GENERIC + "\n", content_type="text/plain; charset=utf-8")

    def _token_from(self, req: Request) -> str:
        cookie = self._cookie(req)
        if cookie:
            return cookie
        q = req.arg(SESSION_COOKIE)
        if q:
            return q
        return req.header(SESSION_HEADER) or ""

    def _authenticate(self, req: Request) -> Ctx | Response:
        token = self._token_from(req)
        if not token:
            return msg(401, SIGNED_OUT, 'Cookie "coder_session_token" or query parameter must be provided.')
        parts = token.split("-")
        err = None
        if len(parts) != 2:
            err = f"incorrect amount of API key parts, expected 2 got {len(parts)}"
        elif len(parts[0]) != 10:
            err = f"invalid API key ID length, expected 10 got {len(parts[0])}"
        elif len(parts[1]) != 22:
            err = f"invalid API key secret length, expected 22 got {len(parts[1])}"
        if err:
            return msg(401, SIGNED_OUT, f"Invalid API key format: {err}")
        key_id, secret = parts
        with self.lock:
            key = self.keys.get(key_id)
            if key is None:
                return msg(401, SIGNED_OUT, "API key is invalid.")
            if key["hashed_secret"] != hashlib.sha256(secret.encode()).hexdigest():
                return msg(401, SIGNED_OUT, "API key secret is invalid.")
            now = self.now()
            if key["expires_at"] <= now:
                return msg(401, SIGNED_OUT, f'API key expired at "{go_time_string(key["expires_at"])}".')
            user = self.users.get(key["user_id"])
            if user is None or user["deleted"]:
                return msg(401, SIGNED_OUT, "API key is invalid.")
            if user["status"] == "suspended":
                return msg(401, f'User is not active (status = "{user["status"]}"). Contact an admin to reactivate your account.')
            if user["status"] == "dormant":
                user["status"] = "active"
            if now - key["last_used"] >= 3600:
                key["last_used"] = now
            if user["last_seen_at"] is None or now - user["last_seen_at"] >= 3600:
                user["last_seen_at"] = now
            return Ctx(user, key)

    # -- keys -------------------------------------------------------------------
    def _insert_key(self, user_id: str, login_type: str, lifetime_s: float, *, token_name: str = "",
                    scope: str = "all") -> str:
        """Caller holds the lock. Returns `<id>-<secret>`."""
        key_id = random_alnum(10)
        while key_id in self.keys:
            key_id = random_alnum(10)
        secret = random_alnum(22)
        now = self.now()
        self.keys[key_id] = {
            "id": key_id, "user_id": user_id, "hashed_secret": hashlib.sha256(secret.encode()).hexdigest(),
            "login_type": login_type, "scope": scope, "token_name": token_name,
            "lifetime_seconds": int(lifetime_s), "expires_at": now + lifetime_s,
            "created_at": now, "updated_at": now, "last_used": now,
        }
        return f"{key_id}-{secret}"

    # -- provisioner ------------------------------------------------------------
    def _tick_loop(self) -> None:
        while not self._ticker_stop.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - keep the ticker alive; a bug shows up as a stuck job
                pass
            step = max(0.005, min(0.02, self.provisioner_delay / 4 if self.provisioner_delay else 0.005))
            self._wake.wait(step)
            self._wake.clear()

    def _tick(self) -> None:
        with self.lock:
            if not self.active_jobs:
                return
            mono = time.monotonic()
            for job_id in list(self.active_jobs):
                job = self.active_jobs[job_id]
                self._advance_job(job, mono)
                if job["completed_at"] is not None:
                    del self.active_jobs[job_id]

    def _advance_job(self, job: dict, mono: float) -> None:
        delay = self.provisioner_delay
        if job["started_at"] is None:
            if self.provisioner_paused or self.provisioners <= 0:
                job["_phase_at"] = mono
                return
            if mono - job["_phase_at"] < delay:
                return
            job["started_at"] = self.now()
            job["worker_id"] = self.worker_id
            job["_phase_at"] = mono
            self._job_logs_started(job)
            self.ws_generation += 1
            return
        if mono - job["_phase_at"] < delay:
            return
        self._finish_job(job)
        self.ws_generation += 1

    # Overridden by mixins: start/finish logs and side effects per job type.
    def _job_logs_started(self, job: dict) -> None:
        if job["type"] == "template_version_import":
            self._import_started(job)
        else:
            self._build_started(job)

    def _finish_job(self, job: dict) -> None:
        if job["canceled_at"] is not None and not job["error"]:
            job["error"] = "canceled"
        if job["type"] == "template_version_import":
            self._import_finished(job)
        else:
            self._build_finished(job)
        job["completed_at"] = self.now()
        job["updated_at"] = job["completed_at"]

    def _new_job(self, *, job_type: str, org_id: str, file_id: str, tags: dict, initiator_id: str,
                 inputs: dict, drive: bool = True) -> dict:
        """Caller holds the lock."""
        now = self.now()
        job = {
            "id": new_id(), "type": job_type, "created_at": now, "updated_at": now,
            "started_at": None, "completed_at": None, "canceled_at": None,
            "error": "", "error_code": "", "file_id": file_id, "tags": dict(tags),
            "organization_id": org_id, "initiator_id": initiator_id, "worker_id": None,
            "input": inputs, "logs": [], "_phase_at": time.monotonic(),
        }
        self.jobs[job["id"]] = job
        if drive:
            self.active_jobs[job["id"]] = job
            self._wake.set()
        return job

    def _add_log(self, job: dict, output: str, *, stage: str, level: str = "info",
                 source: str = "provisioner_daemon") -> None:
        self.log_seq += 1
        job["logs"].append({
            "id": self.log_seq, "created_at": self.now(), "log_source": source,
            "log_level": level, "stage": stage, "output": output,
        })

    @property
    def worker_id(self) -> str:
        wid = getattr(self, "_worker_id", None)
        if wid is None:
            wid = self._worker_id = new_id()
        return wid

    def job_status(self, job: dict) -> str:
        if job["completed_at"] is not None:
            if job["error"]:
                return "failed"
            if job["canceled_at"] is not None:
                return "canceled"
            return "succeeded"
        if job["error"]:
            return "failed"
        if job["canceled_at"] is not None:
            return "canceling"
        if job["started_at"] is None:
            return "pending"
        return "running"

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until the ticker has no job left to drive (paused jobs never finish)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.active_jobs:
                    return True
            time.sleep(0.005)
        return False


__all__ = ["FakeCoderd", "Ctx", "NS", "HOUR_NS"]
