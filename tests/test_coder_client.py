"""The Coder client's retry, auth and error policy, pinned with httpx.MockTransport."""

from __future__ import annotations

import threading

import httpx
import pytest

from jobs.coder import CoderClient
from jobs.errors import CoderAPIError, CoderUnavailable, JobError

TOKEN = "abcdefghij-0123456789abcdefghijkl"
SIGNED_OUT = {"message": "You are signed out or your session has expired. Please sign in again to continue.",
              "detail": "API key is invalid."}


def read_me(client: CoderClient) -> dict:
    """Any authenticated read will do to exercise the request policy."""
    return client.request("GET", "/api/v2/users/me").json()


def client_for(handler, **kw) -> tuple[CoderClient, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("token", TOKEN)
    client = CoderClient("http://coderd.test", transport=httpx.MockTransport(handler), sleep=sleeps.append,
                         ready_timeout=kw.pop("ready_timeout", 30), **kw)
    return client, sleeps


def test_429_is_retried_after_the_servers_retry_after():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(429, json={"message": "rate limited"}, headers={"Retry-After": "7"})
        return httpx.Response(200, json={"id": "u", "username": "admin"})

    client, sleeps = client_for(handler)
    assert read_me(client)["username"] == "admin"
    assert sleeps == [7.0]


def test_503_is_retried_for_a_read_but_not_for_an_unsafe_write():
    calls = []

    def handler(request):
        calls.append(request.method)
        return httpx.Response(503, text="upstream connect error")

    client, _ = client_for(handler, ready_timeout=2)
    with pytest.raises(CoderUnavailable):
        read_me(client)
    reads = len(calls)
    assert reads > 1

    calls.clear()
    with pytest.raises(CoderAPIError) as err:
        client.stop_workspace("w1")
    assert calls == ["POST"] and err.value.status == 503


def test_4xx_is_an_answer_and_is_never_retried():
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(400, json={"message": "Validation failed.",
                                         "validations": [{"field": "username", "detail": "bad"}]})

    client, sleeps = client_for(handler)
    with pytest.raises(CoderAPIError) as err:
        client.request("POST", "/api/v2/users/first", json={}, auth=False, safe=True)
    assert len(calls) == 1 and sleeps == []
    assert "Validation failed." in str(err.value) and "username: bad" in str(err.value)


def test_connection_refused_is_retried_even_for_writes():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) < 3:
            raise httpx.ConnectError("refused")
        return httpx.Response(201, json={"id": "b", "transition": "stop", "job": {"id": "j", "status": "pending"}})

    client, sleeps = client_for(handler)
    assert client.stop_workspace("w1").transition == "stop"
    assert len(sleeps) == 2


def test_a_dropped_connection_is_not_repeated_for_an_unsafe_write():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.RemoteProtocolError("server disconnected")

    client, _ = client_for(handler)
    with pytest.raises(CoderUnavailable, match="may have been applied"):
        client.stop_workspace("w1")
    assert len(calls) == 1


def test_a_rejected_session_triggers_one_relogin():
    seen_tokens = []

    def handler(request):
        if request.url.path == "/api/v2/users/login":
            return httpx.Response(201, json={"session_token": "newtokenid-0123456789abcdefghijkl"})
        seen_tokens.append(request.headers.get("Coder-Session-Token"))
        if request.headers.get("Coder-Session-Token") == TOKEN:
            return httpx.Response(401, json=SIGNED_OUT)
        return httpx.Response(200, json={"id": "u", "username": "admin"})

    client, _ = client_for(handler, email="a@b.io", password="x" * 20)
    assert read_me(client)["username"] == "admin"
    assert seen_tokens == [TOKEN, "newtokenid-0123456789abcdefghijkl"]


def test_a_request_is_prepared_once_and_the_same_request_is_sent_again():
    sent = []

    def handler(request):
        sent.append(request)
        if len(sent) == 1:
            raise httpx.ConnectError("refused")
        if len(sent) == 2:
            return httpx.Response(503, text="upstream connect error")
        return httpx.Response(201, json={"hash": "f1"})

    client, _ = client_for(handler)
    prepared = []
    build_request = client._http.build_request
    client._http.build_request = lambda *a, **kw: prepared.append(build_request(*a, **kw)) or prepared[-1]

    assert client.upload(b"tar bytes") == "f1"
    assert len(prepared) == 1 and all(request is prepared[0] for request in sent) and len(sent) == 3
    assert [request.content for request in sent] == [b"tar bytes"] * 3


def logins_and_reads(expired: set[str], tokens: list[str]):
    """A coderd whose login hands out the next of `tokens`; a read with a token in `expired` is signed out."""
    logins, reads = [], []

    def handler(request):
        if request.url.path == "/api/v2/users/login":
            logins.append(tokens[len(logins)])
            return httpx.Response(201, json={"session_token": logins[-1]})
        token = request.headers.get("Coder-Session-Token")
        reads.append(token)
        if token in expired:
            return httpx.Response(401, json=SIGNED_OUT)
        return httpx.Response(200, json={"id": "u", "username": "admin"})

    return handler, logins, reads


A, B, C = (f"session{n}-0123456789abcdefghijkl" for n in "abc")


def test_a_session_signed_out_mid_run_logs_in_again_exactly_once_and_the_run_goes_on():
    expired: set[str] = set()
    handler, logins, reads = logins_and_reads(expired, [A, B])
    client, _ = client_for(handler, token=None, email="a@b.io", password="x" * 20)

    read_me(client)
    expired.add(A)  # coderd signed the session out: expired, or its database was reset
    read_me(client)
    read_me(client)

    assert logins == [A, B]
    assert reads == [A, A, B, B]


@pytest.mark.parametrize("token", [None, TOKEN], ids=["own-login", "operator-token-then-password"])
def test_a_second_401_after_logging_in_again_is_an_error_naming_the_credentials(token):
    handler, logins, reads = logins_and_reads({TOKEN, A, B, C}, [A, B, C])
    client, _ = client_for(handler, token=token, email="a@b.io", password="x" * 20)

    with pytest.raises(JobError) as err:
        read_me(client)

    assert "CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD" in str(err.value) and "RUNBOOK.md section 3" in str(err.value)
    assert not isinstance(err.value, CoderAPIError) and "x" * 20 not in str(err.value)
    assert len(reads) == 2 and len(logins) == (2 if token is None else 1)  # never a third try


def test_a_refused_token_without_a_password_is_an_error_naming_the_token():
    handler, logins, _ = logins_and_reads({TOKEN}, [])
    client, _ = client_for(handler)

    with pytest.raises(JobError, match="refused CODER_SESSION_TOKEN") as err:
        read_me(client)
    assert logins == [] and TOKEN not in str(err.value)


def test_parallel_requests_signed_out_together_share_one_new_login():
    """reap stops workspaces in parallel on one client: one of them logs in again, the other uses it."""
    both_sent = threading.Barrier(2)
    handler, logins, reads = logins_and_reads({TOKEN}, [A, B])

    def in_step(request):
        if request.headers.get("Coder-Session-Token") == TOKEN:
            both_sent.wait(timeout=10)
        return handler(request)

    client, _ = client_for(in_step, email="a@b.io", password="x" * 20)
    threads = [threading.Thread(target=read_me, args=(client,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert logins == [A] and sorted(reads) == [TOKEN, TOKEN, A, A]


def test_a_401_from_a_database_outage_is_retried_not_treated_as_signed_out():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(401, json={"message": "An internal error occurred. Please try again or contact the system administrator.",
                                             "detail": "Internal error fetching API key by id."})
        return httpx.Response(200, json={"id": "u", "username": "admin"})

    client, sleeps = client_for(handler)
    assert read_me(client)["username"] == "admin"
    assert len(sleeps) == 1


def test_no_cookie_jar_is_kept_between_requests():
    cookies = []

    def handler(request):
        cookies.append(request.headers.get("cookie"))
        if request.url.path == "/api/v2/users/login":
            return httpx.Response(201, json={"session_token": TOKEN}, headers={"Set-Cookie": f"coder_session_token={TOKEN}; Path=/"})
        return httpx.Response(200, json={"id": "u", "username": "admin"})

    client, _ = client_for(handler, token=None, email="a@b.io", password="x" * 20)
    read_me(client)
    read_me(client)
    assert cookies == [None, None, None]


def test_readiness_wait_names_url_and_deadline():
    def handler(request):
        raise httpx.ConnectError("refused")

    client, sleeps = client_for(handler, ready_timeout=0.2)
    with pytest.raises(CoderUnavailable) as err:
        import time
        real_sleep = time.sleep
        client._sleep = real_sleep
        client.wait_ready()
    assert "http://coderd.test" in str(err.value) and "0.2s" in str(err.value)


def test_date_header_is_recorded_as_server_time():
    def handler(request):
        return httpx.Response(200, json={"id": "u", "username": "a"}, headers={"Date": "Tue, 01 Dec 2026 10:00:00 GMT"})

    client, _ = client_for(handler)
    read_me(client)
    assert client.server_date.isoformat() == "2026-12-01T10:00:00+00:00"


# -- sessions: a login this client made is revoked on close, an operator's token never -------------
def session_handler(calls: list[tuple[str, str | None]], logout_status: int = 200):
    def handler(request):
        calls.append((request.url.path, request.headers.get("Coder-Session-Token")))
        if request.url.path == "/api/v2/users/login":
            return httpx.Response(201, json={"session_token": f"login{len(calls):05d}-0123456789abcdefghijkl"})
        if request.url.path == "/api/v2/users/logout":
            return httpx.Response(logout_status, json={"message": "Logged out!" if logout_status == 200 else "nope"})
        return httpx.Response(200, json={"id": "u", "username": "admin"})
    return handler


def test_a_password_login_is_logged_out_with_its_own_token_when_the_client_closes():
    calls = []
    client, _ = client_for(session_handler(calls), token=None, email="a@b.io", password="x" * 20)
    with client:
        read_me(client)
    [login, me, logout] = calls
    assert login[0] == "/api/v2/users/login" and logout[0] == "/api/v2/users/logout"
    assert me[1] == logout[1] and logout[1].startswith("login")


def test_the_session_is_logged_out_when_the_run_fails_too():
    calls = []
    client, _ = client_for(session_handler(calls), token=None, email="a@b.io", password="x" * 20)
    with pytest.raises(RuntimeError), client:
        read_me(client)
        raise RuntimeError("the job failed")
    assert calls[-1][0] == "/api/v2/users/logout"


def test_a_session_token_from_the_operator_is_never_logged_out():
    calls = []
    client, _ = client_for(session_handler(calls), email="a@b.io", password="x" * 20)
    with client:
        read_me(client)
    assert [path for path, _ in calls] == ["/api/v2/users/me"]


def test_a_second_login_made_elsewhere_is_revoked_at_once_and_the_first_kept():
    calls = []
    client, _ = client_for(session_handler(calls), token=None, email="a@b.io", password="x" * 20)
    read_me(client)  # logs in: session A
    client.adopt_login(client.password_login("a@b.io", "x" * 20))  # session B, e.g. bootstrap's check
    client.close()
    logouts = [token for path, token in calls if path == "/api/v2/users/logout"]
    sessions = [token for path, token in calls if path == "/api/v2/users/me"]
    assert len(logouts) == 2 and set(logouts) == {sessions[0], logouts[0]} and logouts[0] != sessions[0]


def test_a_failed_logout_never_masks_the_runs_outcome():
    calls = []
    client, _ = client_for(session_handler(calls, logout_status=500), token=None, email="a@b.io", password="x" * 20)
    with client:
        read_me(client)
    assert calls[-1][0] == "/api/v2/users/logout"
