"""The Coder session, as an httpx.Auth: which token a request carries, and what a 401 means.

- A CODER_SESSION_TOKEN is the operator's: used as it is, and never logged out.
- Without one, the first request that needs a session logs in with CODER_ADMIN_EMAIL/
  CODER_ADMIN_PASSWORD. coderd keeps one API key row per password login and never purges it
  (BEHAVIOR.md §11), so a session this job logged in for is logged out when the client closes,
  whatever the outcome of the run.
- A 401 "signed out" (an expired or revoked token, a reset database) logs in once more and
  resends the same request; a second 401 is an answer about the credentials, not a stale token.
- A 401 caused by coderd's database outage (BEHAVIOR.md §1) says nothing about the session:
  it goes back to the client, whose retry policy repeats it.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any, Protocol

import httpx

from jobs.coder_answers import coderd_said, is_database_outage, is_signed_out
from jobs.errors import (
    CoderAPIError,
    JobError,
    credentials_rejected_message,
    session_refused_message,
    token_rejected_message,
)

TOKEN_HEADER = "Coder-Session-Token"


class SessionAPI(Protocol):
    """The three calls a session makes itself, all without a session (the Coder client)."""

    url: str

    def password_login(self, email: str, password: str) -> str: ...

    def first_user_exists(self) -> bool: ...

    def revoke_session(self, token: str) -> None: ...


class CoderSession(httpx.Auth):
    requires_response_body = True  # a 401's body tells "signed out" from a database outage

    def __init__(self, api: SessionAPI, *, token: str | None, email: str | None, password: str | None,
                 log: Any) -> None:
        self._api = api
        self._token = token
        self._email = email
        self._password = password
        self._owned = False  # the token came from our own password login: revoke it on close
        self._token_refused: str | None = None  # what coderd said to CODER_SESSION_TOKEN, once it refused it
        # Parallel requests (reap's stops) share one session: one of them logs in, the others use it.
        self._lock = threading.Lock()
        self.log = log

    @property
    def can_login(self) -> bool:
        return bool(self._email and self._password)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[TOKEN_HEADER] = sent = self._current_token()
        response = yield request
        if response.status_code != 401 or is_database_outage(response):
            return
        if not self.can_login:
            raise JobError(token_rejected_message(self._api.url, coderd_said(request, response)))
        if not is_signed_out(response):
            return  # some other 401: an answer for the caller
        request.headers[TOKEN_HEADER] = self._login_again(request, response, sent)
        response = yield request
        if response.status_code == 401 and not is_database_outage(response):
            raise JobError(session_refused_message(self._api.url, request.method, request.url.path,
                                                   coderd_said(request, response)))

    def _current_token(self) -> str:
        with self._lock:
            if self._token is None:
                self._login()
            assert self._token is not None
            return self._token

    def _login_again(self, request: httpx.Request, response: httpx.Response, sent: str) -> str:
        with self._lock:
            if self._token == sent:  # not replaced by a parallel request meanwhile
                if not self._owned:
                    # The operator's token: a documented fallback (README), so a reset database that
                    # killed the token still heals; said loudly, since the token needs replacing.
                    self._token_refused = coderd_said(request, response)
                    self.log.warning("coderd refused CODER_SESSION_TOKEN; logging in with CODER_ADMIN_EMAIL/"
                                     "CODER_ADMIN_PASSWORD instead. Replace or unset the token",
                                     path=request.url.path, coderd=self._token_refused)
                else:
                    self.log.info("session rejected, logging in again", path=request.url.path)
                self._token, self._owned = None, False
                self._login()
            assert self._token is not None
            return self._token

    def _login(self) -> None:
        if not self.can_login:
            raise CoderAPIError("POST", "/api/v2/users/login", 401, "no credentials to log in with")
        try:
            self._token = self._api.password_login(self._email or "", self._password or "")
        except CoderAPIError as err:
            # "Incorrect email or password" would send the operator after the credentials, when
            # the cause is a coderd with no users at all (a new or reset database, even mid-run).
            if err.status == 401 and not self._api.first_user_exists():
                raise JobError(f"coderd at {self._api.url} has no users: its database is new or was reset "
                               f"(login answered: {err.message or err.status}); run `coder-jobs recover`") from None
            if err.status in (400, 401, 403):
                raise JobError(credentials_rejected_message(self._api.url, err.message or str(err.status),
                                                            self._token_refused)) from None
            raise
        self._owned = True

    def adopt(self, token: str) -> None:
        """A session from a password login made elsewhere (bootstrap-admin's check): later requests
        use it instead of logging in again; when we already hold a token, it is revoked at once."""
        with self._lock:
            if self._token is None:
                self._token, self._owned = token, True
                return
        self._revoke(token)

    def logout(self) -> None:
        """Revoke the session this job logged in for; the operator's token is left alone."""
        with self._lock:
            token, owned = self._token, self._owned
            if owned:
                self._token, self._owned = None, False
        if owned and token is not None:
            self._revoke(token)

    def _revoke(self, token: str) -> None:
        # Never raises: the run's own outcome stands.
        try:
            self._api.revoke_session(token)
        except JobError as err:
            self.log.warning("could not revoke the login session; coderd keeps it until it expires", cause=str(err))
