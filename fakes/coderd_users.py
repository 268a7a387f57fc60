"""Users, organizations, login and API keys for the coderd fake."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any

from fakes.base import Request, Response
from fakes.coderd_common import (
    NIL_UUID,
    NS,
    docker_name,
    email_valid,
    go_duration,
    is_uuid,
    msg,
    name_valid,
    new_id,
    norm_uuid,
    not_found,
    read_json,
    real_name_valid,
    rfc3339,
    validation_failed,
)
from jobs import validation

if TYPE_CHECKING:  # pragma: no cover
    from fakes.coderd import Ctx, FakeCoderd

ROLE_DISPLAY = {
    "owner": "Owner",
    "template-admin": "Template Admin",
    "user-admin": "User Admin",
    "auditor": "Auditor",
}
USER_PARAM_ERROR = '"user" must be an existing uuid or username.'


def _hash_password(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class UsersMixin:
    # -- records -----------------------------------------------------------------
    def _new_user_record(self: FakeCoderd, user_id: str, username: str, email: str, name: str,
                         password: str | None, roles: tuple[str, ...] | list[str], login_type: str,
                         *, system: bool = False) -> dict:
        now = self.now()
        return {
            "id": user_id, "username": username, "email": email, "name": name,
            "hashed_password": _hash_password(password) if password is not None else None,
            "created_at": now, "updated_at": now, "last_seen_at": None, "status": "active" if not system else "active",
            "login_type": login_type, "roles": list(roles), "org_ids": [self.default_org_id],
            "deleted": False, "is_system": system,
        }

    def _user_json(self: FakeCoderd, u: dict) -> dict:
        return {
            "id": u["id"], "username": u["username"], "avatar_url": "", "name": u["name"], "email": u["email"],
            "created_at": rfc3339(u["created_at"]), "updated_at": rfc3339(u["updated_at"]),
            "last_seen_at": rfc3339(u["last_seen_at"]), "status": u["status"], "login_type": u["login_type"],
            "theme_preference": "", "organization_ids": list(u["org_ids"]),
            "roles": [{"name": r, "display_name": ROLE_DISPLAY.get(r, r), "organization_id": ""} for r in u["roles"]],
        }

    def _org_json(self: FakeCoderd, o: dict) -> dict:
        return {
            "id": o["id"], "name": o["name"], "display_name": o["display_name"], "description": o["description"],
            "icon": o["icon"], "created_at": rfc3339(o["created_at"]), "updated_at": rfc3339(o["updated_at"]),
            "is_default": o["is_default"],
        }

    def _human_users(self: FakeCoderd) -> list[dict]:
        return [u for u in self.users.values() if not u["deleted"] and not u["is_system"]]

    def _find_user(self: FakeCoderd, ident: str) -> dict | None:
        """By uuid or case-insensitive username. Caller holds the lock."""
        if is_uuid(ident):
            u = self.users.get(norm_uuid(ident))
        else:
            uid = self.users_by_name.get(ident.lower())
            u = self.users.get(uid) if uid else None
        return u if u is not None and not u["deleted"] else None

    def _user_param(self: FakeCoderd, req: Request, ctx: Ctx) -> dict | Response:
        ident = req.params.get("user", "")
        if ident == "me":
            return ctx.user
        with self.lock:
            u = self._find_user(ident)
        if u is None:
            return msg(400, USER_PARAM_ERROR, f"queried user={ident!r}".replace("'", '"'))
        return u

    def _org_param(self: FakeCoderd, ident: str, ctx: Ctx | None) -> dict | Response:
        if not ident:
            return msg(400, '"organization" must be provided.')
        with self.lock:
            org = None
            if ident == "default" or ident == NIL_UUID:
                org = self.orgs.get(self.default_org_id)
            elif is_uuid(ident):
                org = self.orgs.get(norm_uuid(ident))
            else:
                for o in self.orgs.values():
                    if o["name"].lower() == ident.lower():
                        org = o
                        break
            if org is None:
                return not_found()
            if ctx is not None and not ctx.is_owner and org["id"] not in ctx.user["org_ids"]:
                return not_found()
            return org

    # -- seeding helpers ---------------------------------------------------------
    def create_user(self: FakeCoderd, username: str, email: str | None = None, password: str = "SomeSecurePassw0rd!",
                    roles: tuple[str, ...] | list[str] = ("owner",), *, name: str = "",
                    status: str = "active", login_type: str = "password") -> dict:
        """Insert a user directly (no validation); returns its codersdk.User JSON."""
        with self.lock:
            if username.lower() in self.users_by_name:
                raise ValueError(f"user {username!r} exists")
            uid = new_id()
            u = self._new_user_record(uid, username, email or f"{username}@example.com", name, password,
                                      tuple(roles), login_type)
            u["status"] = status
            self.users[uid] = u
            self.users_by_name[username.lower()] = uid
            return self._user_json(u)

    def _ensure_user(self: FakeCoderd, username: str, roles: tuple[str, ...] = ()) -> dict:
        with self.lock:
            u = self._find_user(username)
            if u is None:
                self.create_user(username, roles=roles)
                u = self._find_user(username)
            return u  # type: ignore[return-value]

    def token_for(self: FakeCoderd, username: str, lifetime_s: float | None = None) -> str:
        """A fresh API token (login type `token`) for an existing user."""
        with self.lock:
            u = self._find_user(username)
            if u is None:
                raise KeyError(username)
            return self._insert_key(u["id"], "token", lifetime_s or self.default_token_lifetime_s,
                                    token_name=docker_name(self.rng) + new_id()[:4])

    def race_first_user(self: FakeCoderd, calls: int = 2) -> None:
        """The next `calls` POST /users/first all pass the 409 check before any inserts."""
        self.first_user_barrier = threading.Barrier(calls)

    def user(self: FakeCoderd, username: str) -> dict | None:
        with self.lock:
            u = self._find_user(username)
            return self._user_json(u) if u else None

    # -- routes ------------------------------------------------------------------
    def register_user_routes(self: FakeCoderd) -> None:
        self.api("GET", "/users/first", self._get_first_user, auth=False)
        self.api("GET", "/users/authmethods", self._get_auth_methods, auth=False)
        self.api("POST", "/users/first", self._post_first_user, auth=False, csrf_exempt=True)
        self.api("POST", "/users/login", self._post_login, auth=False)
        self.api("POST", "/users/logout", self._post_logout)
        self.api("GET", "/users/{user}/organizations", self._get_user_orgs)
        self.api("GET", "/users/{user}/keys/tokens/tokenconfig", self._get_token_config)
        self.api("GET", "/users/{user}/keys/tokens/{keyname}", self._get_token_by_name)
        self.api("GET", "/users/{user}/keys/tokens", self._get_tokens)
        self.api("POST", "/users/{user}/keys/tokens", self._post_token)
        self.api("POST", "/users/{user}/keys", self._post_session_key)
        self.api("GET", "/users/{user}/keys/{keyid}", self._get_key)
        self.api("DELETE", "/users/{user}/keys/{keyid}", self._delete_key)
        self.api("GET", "/users/{user}", self._get_user)
        self.api("GET", "/organizations", self._get_orgs)
        self.api("GET", "/organizations/{organization}", self._get_org)

    def database_outage(self: FakeCoderd, user_count_requests: int) -> None:
        """The next `user_count_requests` user counts fail as during a Postgres outage (what a real
        coderd answered `doctor` in issue 21; coderd/users.go `firstUser`)."""
        with self.lock:
            self.user_count_failures = user_count_requests

    def _get_first_user(self: FakeCoderd, req: Request) -> Response:
        with self.lock:
            if getattr(self, "user_count_failures", 0) > 0:
                self.user_count_failures -= 1
                return msg(500, "Internal error fetching user count.", "pq: the database system is shutting down")
            if self._human_users():
                return msg(200, "The initial user has already been created!")
        return msg(404, "The initial user has not been created!")

    def _get_auth_methods(self: FakeCoderd, req: Request) -> Response:
        body: dict[str, Any] = {"password": {"enabled": not self.password_auth_disabled},
                                "github": {"enabled": False, "default_provider_configured": False},
                                "oidc": {"enabled": False, "signInText": "", "iconUrl": ""},
                                "terms_of_service_url": ""}
        if self.behaviour.setup_token:
            with self.lock:
                body["setup_token_required"] = self.setup_token is not None and not self._human_users()
        return Response(200, body)

    def _post_first_user(self: FakeCoderd, req: Request) -> Response:
        body = read_json(req, {"email": "str", "username": "str", "name": "str", "password": "str",
                               "trial": "bool", "trial_info": "dict", "setup_token": "str"})
        email, username = body.get("email", ""), body.get("username", "")
        name, password = body.get("name", ""), body.get("password", "")
        errors: list[tuple[str, str, Any]] = []
        errors.extend(_email_errors(email))
        if not username:
            errors.append(("username", "required", ""))
        elif not name_valid(username):
            errors.append(("username", "username", username))
        if not real_name_valid(name):
            errors.append(("name", "user_real_name", name))
        if not password:
            errors.append(("password", "required", ""))
        if errors:
            return validation_failed(errors)
        with self.lock:
            if self._human_users():
                return msg(409, "The initial user has already been created.")
        if self.setup_token is not None:
            sent = body.get("setup_token")
            if not sent:
                return msg(403, "Setup token is required to create the first user.",
                           "Pass the one-time setup token printed by the server as \"setup_token\".")
            if sent != self.setup_token:
                return msg(403, "Invalid setup token.")
        problem = coderd_password_error(password)
        if problem:
            return msg(400, "Password not strong enough!", validations=[{"field": "password", "detail": problem}])
        if body.get("trial") and self.trial_fails:
            return msg(500, "Failed to generate trial",
                       'Post "https://v2-licensor.coder.com/trial": dial tcp: lookup v2-licensor.coder.com: no such host')
        # No lock between the 409 check and the insert, like coderd. `race_first_user(n)` holds
        # n calls here until all have passed the check, so a test gets the race every time.
        barrier = self.first_user_barrier
        if barrier is not None:
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            self.first_user_barrier = None
        if self.first_user_race_window > 0:
            time.sleep(self.first_user_race_window)
        with self.lock:
            # The loser of the race gets 500, not 409; a real coderd's detail named the email
            # index (BEHAVIOR.md §11), so that one is checked first.
            for index, key in (("idx_users_email", "email"), ("idx_users_username", "username")):
                wanted = (email if key == "email" else username).lower()
                if any(not u["deleted"] and u[key].lower() == wanted for u in self.users.values()):
                    return msg(500, "Internal error creating user.",
                               f'pq: duplicate key value violates unique constraint "{index}"')
            uid = new_id()
            self.users[uid] = self._new_user_record(uid, username, email, name, password, ("owner",), "password")
            self.users_by_name[username.lower()] = uid
            return Response(201, {"user_id": uid, "organization_id": self.default_org_id})

    def _post_login(self: FakeCoderd, req: Request) -> Response:
        body = read_json(req, {"email": "str", "password": "str"})
        email, password = body.get("email", ""), body.get("password", "")
        errors: list[tuple[str, str, Any]] = []
        errors.extend(_email_errors(email))
        if not password:
            errors.append(("password", "required", ""))
        if errors:
            return validation_failed(errors)
        if self.password_auth_disabled:
            return msg(403, "Password authentication is disabled.")
        with self.lock:
            user = next((u for u in self.users.values()
                         if not u["deleted"] and u["email"].lower() == email.lower()), None)
            if user is None or user["hashed_password"] is None or user["hashed_password"] != _hash_password(password):
                return msg(401, "Incorrect email or password.")
            if user["login_type"] != "password":
                return msg(403, f'Incorrect login type, attempting to use "password" but user is of login type "{user["login_type"]}"')
            if user["status"] == "suspended":
                return msg(401, "Your account is suspended. Contact an admin to reactivate your account.")
            if user["status"] == "dormant":
                user["status"] = "active"
            token = self._insert_key(user["id"], "password", self.session_duration_s)
            expires = self.keys[token.split("-")[0]]["expires_at"]
        cookie_exp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(expires))
        return Response(201, {"session_token": token}, headers={
            "Set-Cookie": f"coder_session_token={token}; Path=/; Expires={cookie_exp}; HttpOnly; SameSite=Lax",
        })

    def _post_logout(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        # Deletes the key the call was made with, and clears the cookie (coderd/userauth.go
        # `postLogout`; BEHAVIOR.md §11). Nothing else ever removes a login's key row.
        with self.lock:
            self.keys.pop(ctx.key["id"], None)
        return Response(200, {"message": "Logged out!"},
                        headers={"Set-Cookie": "coder_session_token=; Path=/; Max-Age=0"})

    def api_key_count(self: FakeCoderd, login_type: str | None = None) -> int:
        """Rows in coderd's api_keys table (optionally of one login type: password, token)."""
        with self.lock:
            return sum(1 for k in self.keys.values() if login_type is None or k["login_type"] == login_type)

    def _get_user(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            return Response(200, self._user_json(u))

    def _get_user_orgs(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            return Response(200, [self._org_json(self.orgs[o]) for o in u["org_ids"] if o in self.orgs])

    def _get_orgs(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            orgs = [o for o in self.orgs.values() if ctx.is_owner or o["id"] in ctx.user["org_ids"]]
            return Response(200, [self._org_json(o) for o in sorted(orgs, key=lambda o: o["created_at"])])

    def _get_org(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        org = self._org_param(req.params.get("organization", ""), ctx)
        if isinstance(org, Response):
            return org
        with self.lock:
            return Response(200, self._org_json(org))

    # -- keys --------------------------------------------------------------------
    def _key_json(self: FakeCoderd, k: dict, with_owner: bool = False) -> dict:
        out = {
            "id": k["id"], "user_id": k["user_id"], "last_used": rfc3339(k["last_used"]),
            "expires_at": rfc3339(k["expires_at"]), "created_at": rfc3339(k["created_at"]),
            "updated_at": rfc3339(k["updated_at"]), "login_type": k["login_type"], "scope": k["scope"],
            "token_name": k["token_name"], "lifetime_seconds": k["lifetime_seconds"],
        }
        if with_owner:
            u = self.users.get(k["user_id"])
            out["username"] = u["username"] if u else ""
        return out

    def _may_manage_keys(self: FakeCoderd, ctx: Ctx, user: dict) -> bool:
        return ctx.is_owner or ctx.user["id"] == user["id"]

    def _post_token(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        body = read_json(req, {"lifetime": "int", "scope": "str", "token_name": "str"})
        lifetime_ns = body.get("lifetime", 0)
        scope = body.get("scope") or "all"
        if lifetime_ns:
            max_ns = int(self.max_token_lifetime_s * NS)
            if lifetime_ns <= 0:
                return msg(400, "Failed to validate create API key request.",
                           "lifetime must be positive number greater than 0")
            if lifetime_ns > max_ns:
                return msg(400, "Failed to validate create API key request.",
                           f"lifetime must be less than {go_duration(max_ns)}")
            lifetime_s = lifetime_ns / NS
        else:
            lifetime_s = self.default_token_lifetime_s
        if scope not in ("all", "application_connect"):
            return msg(500, "Failed to create API key.",
                       f'pq: invalid input value for enum api_key_scope: "{scope}"')
        if not self._may_manage_keys(ctx, u):
            return msg(500, "Failed to create API key.", "unauthorized: rbac: forbidden")
        with self.lock:
            name = body.get("token_name") or docker_name(self.rng)
            for k in self.keys.values():
                if k["user_id"] == u["id"] and k["login_type"] == "token" and k["token_name"] == name:
                    return msg(409, f'A token with name "{name}" already exists.', validations=[
                        {"field": "name", "detail": "This value is already in use and should be unique."}])
            token = self._insert_key(u["id"], "token", lifetime_s, token_name=name, scope=scope)
            self.keys[token.split("-")[0]]["lifetime_seconds"] = int(lifetime_s)
        return Response(201, {"key": token})

    def _post_session_key(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        if not self._may_manage_keys(ctx, u):
            return msg(500, "Failed to create API key.", "unauthorized: rbac: forbidden")
        with self.lock:
            token = self._insert_key(u["id"], "password", 7 * 24 * 3600)
        return Response(201, {"key": token})

    def _get_tokens(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        include_all = (req.arg("include_all") or "").lower() == "true"
        with self.lock:
            keys = [k for k in self.keys.values() if k["login_type"] == "token"
                    and ((include_all and ctx.is_owner) or k["user_id"] == u["id"])
                    and (ctx.is_owner or k["user_id"] == ctx.user["id"])]
            keys.sort(key=lambda k: k["created_at"])
            return Response(200, [self._key_json(k) for k in keys])

    def _get_token_config(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        return Response(200, {"max_token_lifetime": int(self.max_token_lifetime_s * NS)})

    def _get_token_by_name(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            for k in self.keys.values():
                if k["user_id"] == u["id"] and k["login_type"] == "token" and k["token_name"] == req.params["keyname"]:
                    if self._may_manage_keys(ctx, u):
                        return Response(200, self._key_json(k))
        return not_found()

    def _get_key(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            k = self.keys.get(req.params["keyid"])
            if k is None or k["user_id"] != u["id"] or not self._may_manage_keys(ctx, u):
                return not_found()
            return Response(200, self._key_json(k))

    def _delete_key(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            k = self.keys.get(req.params["keyid"])
            if k is None or k["user_id"] != u["id"] or not self._may_manage_keys(ctx, u):
                return not_found()
            del self.keys[k["id"]]
        return Response(204)


def _email_errors(email: str) -> list[tuple[str, str, Any]]:
    """go-playground's `required,email` tags, as coderd's request structs declare them."""
    if not email:
        return [("email", "required", "")]
    return [] if email_valid(email) else [("email", "email", email)]


def coderd_password_error(password: str) -> str | None:
    """coderd's own error text for a password it refuses, or None (jobs/validation.py has the rule)."""
    if validation.password_entropy(password) < validation.MIN_PASSWORD_ENTROPY:
        classes = validation.PASSWORD_CLASSES
        present = {c for c in classes if any(ch in c for ch in password)}
        tips = []
        if not {classes[0], classes[1], classes[2]} <= present:
            tips.append("including more special characters")
        for cls, tip in ((classes[3], "using lowercase letters"), (classes[4], "using uppercase letters"),
                         (classes[5], "using numbers")):
            if cls not in present:
                tips.append(tip)
        if tips:
            return f"insecure password, try {', '.join(tips)} or using a longer password"
        return "insecure password, try using a longer password"
    if len(password.encode()) > validation.MAX_PASSWORD_BYTES:
        return f"password must be no more than {validation.MAX_PASSWORD_BYTES} characters"
    return None
