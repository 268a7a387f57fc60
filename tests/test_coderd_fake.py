"""Behaviour of the fake coderd, driven over loopback HTTP like the jobs drive the real one."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from fakes.coderd import FakeCoderd
from fakes.coderd_users import coderd_password_error as validate
from jobs.validation import password_entropy as entropy

STRONG = "MyP4ssw0rd!"


# Every exchange is checked against swagger.json by the autouse fixture in conftest.py.
@pytest.fixture
def fake():
    f = FakeCoderd(first_user_race_window=0.0, provisioner_delay=0.01)
    f.start()
    yield f
    f.stop()


def client(fake: FakeCoderd, token: str | None = None) -> httpx.Client:
    headers = {"Coder-Session-Token": token} if token else {}
    return httpx.Client(base_url=fake.url + "/api/v2", headers=headers, timeout=10)


@pytest.fixture
def admin(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    with client(fake, fake.token_for("admin")) as c:
        yield c


FIRST = {"email": "admin@example.com", "username": "admin", "name": "Ada Admin", "password": STRONG, "trial": False}


# -- health and build info -----------------------------------------------------------
def test_healthz_buildinfo_and_root_need_no_auth(fake):
    r = httpx.get(fake.url + "/healthz")
    assert (r.status_code, r.text) == (200, "OK")
    assert r.headers["X-Coder-Build-Version"] == fake.version
    with client(fake) as c:
        info = c.get("/buildinfo").json()
        assert info["version"] == fake.version and info["dashboard_url"] == fake.url
        assert c.get("/").json() == {"message": "👋"}
        r = c.get("/no/such/route")
        assert r.status_code == 404 and r.json() == {"message": "Route not found."}
        assert r.headers["X-Coder-Build-Version"]


def test_date_header_follows_clock_offset(fake):
    fake.clock_offset = 3 * 86400
    r = httpx.get(fake.url + "/healthz")
    served = parsedate_to_datetime(r.headers["Date"])
    assert abs((served - datetime.now(UTC)).total_seconds() - 3 * 86400) < 5


# -- password entropy (jobs/validation.py, shared with the jobs; every vector: test_validation.py) and
# the fake's error text (fakes/coderd_users.py) --
@pytest.mark.parametrize(
    "password,ok",
    [("password123", False), ("Coder123!", False), (STRONG, True), ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", False),
     ("Aa1!" + "x9Qz_" * 14, False)],  # the last one is strong but longer than 64 bytes
)
def test_password_strength_examples(password, ok):
    assert (validate(password) is None) is ok


def test_password_entropy_numbers():
    assert round(entropy("password123"), 1) == 51.7  # 10 counted chars (the "3" of 123 is dropped) x log2(36)
    assert entropy("Coder123!") < 52 <= entropy(STRONG)
    assert validate("Aa1!" + "x9Qz_" * 14) == "password must be no more than 64 characters"


# -- first user ----------------------------------------------------------------------
def test_first_user_flow(fake):
    with client(fake) as c:
        r = c.get("/users/first")
        assert r.status_code == 404 and r.json() == {"message": "The initial user has not been created!"}
        r = c.post("/users/first", json=FIRST)
        assert r.status_code == 201
        created = r.json()
        org = c.get("/organizations/default", headers={"Coder-Session-Token": fake.token_for("admin")}).json()
        assert created["organization_id"] == org["id"]
        assert c.get("/users/first").json() == {"message": "The initial user has already been created!"}
        r = c.post("/users/first", json=FIRST)
        assert r.status_code == 409 and r.json()["message"] == "The initial user has already been created."
        # no session comes back: log in next
        r = c.post("/users/login", json={"email": "admin@example.com", "password": STRONG})
        assert r.status_code == 201 and "coder_session_token=" in r.headers["set-cookie"]
        token = r.json()["session_token"]
        c.cookies.clear()
        me = c.get("/users/me", headers={"Coder-Session-Token": token}).json()
        assert me["id"] == created["user_id"] and me["login_type"] == "password"
        assert [r["name"] for r in me["roles"]] == ["owner"] and me["organization_ids"] == [org["id"]]


@pytest.mark.parametrize(
    "change,field,tag",
    [
        ({"email": ""}, "email", "required"),
        ({"email": "admin@localhost"}, "email", "email"),
        ({"email": "a@10.0.0.1"}, "email", "email"),
        ({"username": "bad_name"}, "username", "username"),
        ({"username": "-admin"}, "username", "username"),
        ({"username": "new"}, "username", "username"),
        ({"username": "a" * 33}, "username", "username"),
        ({"name": " Ada"}, "name", "user_real_name"),
        ({"password": ""}, "password", "required"),
    ],
)
def test_first_user_validation(fake, change, field, tag):
    with client(fake) as c:
        r = c.post("/users/first", json={**FIRST, **change})
    assert r.status_code == 400
    body = r.json()
    assert body["message"] == "Validation failed."
    assert body["validations"][0]["field"] == field
    assert body["validations"][0]["detail"].startswith(f'Validation failed for tag "{tag}" with value: "')


def test_first_user_error_order_and_bodies(fake):
    with client(fake) as c:
        r = c.post("/users/first", content=b"{not json")
        assert r.status_code == 400 and r.json()["message"] == "Request body must be valid JSON."
        r = c.post("/users/first", json={**FIRST, "password": "password123"})
        assert r.status_code == 400 and r.json()["message"] == "Password not strong enough!"
        assert r.json()["validations"][0]["field"] == "password"
        r = c.post("/users/first", json={**FIRST, "trial": True})
        assert r.status_code == 500 and r.json()["message"] == "Failed to generate trial"
        assert c.get("/users/first").status_code == 404  # no user was created
        assert c.post("/users/first", json=FIRST).status_code == 201
        # once a user exists, 409 comes before the password check
        r = c.post("/users/first", json={**FIRST, "password": "weak"})
        assert r.status_code == 409


def test_first_user_trial_works_when_licensor_reachable(fake):
    fake.trial_fails = False
    with client(fake) as c:
        assert c.post("/users/first", json={**FIRST, "trial": True}).status_code == 201


def test_first_user_setup_token(fake):
    fake.setup_token = "s3cr3t"
    with client(fake) as c:
        r = c.post("/users/first", json=FIRST)
        assert r.status_code == 403 and r.json()["message"] == "Setup token is required to create the first user."
        r = c.post("/users/first", json={**FIRST, "setup_token": "nope"})
        assert r.status_code == 403 and r.json()["message"] == "Invalid setup token."
        assert c.post("/users/first", json={**FIRST, "setup_token": "s3cr3t"}).status_code == 201


def test_first_user_race_two_concurrent_calls(fake):
    """No lock in coderd: both pass the 409 check; the second insert of the same username hits the
    unique index (500); with different usernames both succeed and there are two owners."""
    fake.race_first_user(2)  # both calls pass the 409 check before either inserts, however slow the machine
    results = []

    def go(body):
        with client(fake) as c:
            results.append(c.post("/users/first", json=body))

    threads = [threading.Thread(target=go, args=(FIRST,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 500]
    failed = next(r for r in results if r.status_code == 500).json()
    assert failed["message"] == "Internal error creating user."
    assert "duplicate key value violates unique constraint" in failed["detail"]

    fake.reset_database()
    fake.race_first_user(2)
    results.clear()
    threads = [threading.Thread(target=go, args=({**FIRST, "username": f"admin{i}", "email": f"a{i}@example.com"},))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [201, 201]


# -- login and auth -------------------------------------------------------------------
def test_login_errors(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    with client(fake) as c:
        r = c.post("/users/login", json={"email": "admin", "password": STRONG})  # usernames are not accepted
        assert r.status_code == 400 and r.json()["validations"][0]["field"] == "email"
        r = c.post("/users/login", json={"email": "admin@example.com", "password": "wrong"})
        assert r.status_code == 401 and r.json()["message"] == "Incorrect email or password."
        r = c.post("/users/login", json={"email": "nobody@example.com", "password": "wrong"})
        assert r.status_code == 401 and r.json()["message"] == "Incorrect email or password."
        assert c.post("/users/login", json={"email": "ADMIN@example.com", "password": STRONG}).status_code == 201
        # httpx stored the session cookie; a later cookie-only POST would trip CSRF (see the CSRF test)
        c.cookies.clear()
        fake.password_auth_disabled = True
        r = c.post("/users/login", json={"email": "admin@example.com", "password": STRONG})
        assert r.status_code == 403 and r.json()["message"] == "Password authentication is disabled."


SIGNED_OUT = "You are signed out or your session has expired. Please sign in again to continue."


@pytest.mark.parametrize(
    "token,detail",
    [
        (None, 'Cookie "coder_session_token" or query parameter must be provided.'),
        ("garbage", "Invalid API key format: incorrect amount of API key parts, expected 2 got 1"),
        ("short-abcdefghijklmnopqrstuv", "Invalid API key format: invalid API key ID length, expected 10 got 5"),
        ("abcdefghij-short", "Invalid API key format: invalid API key secret length, expected 22 got 5"),
        ("abcdefghij-abcdefghijklmnopqrstuv", "API key is invalid."),
    ],
)
def test_401_bodies(fake, token, detail):
    with client(fake, token) as c:
        r = c.get("/users/me")
    assert r.status_code == 401
    assert r.json() == {"message": SIGNED_OUT, "detail": detail}


def test_token_sources_cookie_wins_then_query_then_header(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    fake.create_user("bob", roles=())
    admin_tok, bob_tok = fake.token_for("admin"), fake.token_for("bob")
    with client(fake) as c:
        assert c.get("/users/me", params={"coder_session_token": bob_tok}).json()["username"] == "bob"
        r = c.get("/users/me", params={"coder_session_token": bob_tok}, headers={"Coder-Session-Token": admin_tok})
        assert r.json()["username"] == "bob"
        r = c.get("/users/me", headers={"Coder-Session-Token": admin_tok, "Cookie": f"coder_session_token={bob_tok}"})
        assert r.json()["username"] == "bob"  # GETs silently use the cookie's identity
        r = c.get("/users/me", headers={"Authorization": f"Bearer {admin_tok}"})
        assert r.status_code == 401  # Bearer is not read on API routes


def test_bad_secret_and_expired_key(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    tok = fake.token_for("admin")
    with client(fake, tok[:11] + "x" * 22) as c:
        assert c.get("/users/me").json()["detail"] == "API key secret is invalid."
    with client(fake, tok) as c:
        assert c.get("/users/me").status_code == 200
        fake.clock_offset = 169 * 3600  # past the 168h default token lifetime
        r = c.get("/users/me")
        assert r.status_code == 401 and r.json()["detail"].startswith('API key expired at "')


def test_csrf_cookie_jar_with_different_header_is_rejected(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    fake.create_user("bob", roles=())
    with httpx.Client(base_url=fake.url + "/api/v2") as jar:
        login = jar.post("/users/login", json={"email": "admin@example.com", "password": STRONG})
        assert "coder_session_token" in jar.cookies  # httpx kept the cookie
        other = fake.token_for("bob")
        r = jar.post("/users/me/keys/tokens", json={}, headers={"Coder-Session-Token": other})
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
        assert "CSRF error encountered" in r.text and "values do not match" in r.text
        # the same header as the cookie is fine, and so is clearing the jar
        r = jar.post("/users/me/keys/tokens", json={}, headers={"Coder-Session-Token": login.json()["session_token"]})
        assert r.status_code == 201
        jar.cookies.clear()
        assert jar.post("/users/me/keys/tokens", json={}, headers={"Coder-Session-Token": other}).status_code == 201


def test_org_lookup_forms(fake, admin):
    org = admin.get("/users/me/organizations").json()
    assert len(org) == 1 and org[0]["name"] == "coder" and org[0]["display_name"] == "Coder"
    oid = org[0]["id"]
    for ident in ("default", "00000000-0000-0000-0000-000000000000", oid, "coder", "CODER"):
        r = admin.get(f"/organizations/{ident}")
        assert r.status_code == 200 and r.json()["id"] == oid, ident
    assert admin.get("/organizations/Default").status_code == 404  # the literal is lowercase only
    r = admin.get("/organizations/nope")
    assert r.status_code == 404 and r.json() == {"message": "Resource not found or you do not have access to this resource"}


def test_users_by_me_username_and_uuid(fake, admin):
    me = admin.get("/users/me").json()
    assert admin.get("/users/ADMIN").json()["id"] == me["id"]
    assert admin.get(f"/users/{me['id']}").json()["username"] == "admin"
    assert admin.get("/users/ghost").status_code == 400


def test_tokens(fake, admin):
    r = admin.post("/users/me/keys/tokens", json={"token_name": "ci", "lifetime": 30 * 86400 * 10**9})
    assert r.status_code == 201
    key = r.json()["key"]
    key_id = key.split("-")[0]
    listed = admin.get("/users/me/keys/tokens").json()
    ci = next(t for t in listed if t["token_name"] == "ci")
    assert ci["id"] == key_id and ci["lifetime_seconds"] == 30 * 86400 and ci["login_type"] == "token"
    r = admin.post("/users/me/keys/tokens", json={"token_name": "ci"})
    assert r.status_code == 409 and r.json()["message"] == 'A token with name "ci" already exists.'
    assert r.json()["validations"][0]["field"] == "name"
    r = admin.post("/users/me/keys/tokens", json={"lifetime": 876601 * 3600 * 10**9})
    assert r.status_code == 400 and r.json()["detail"] == "lifetime must be less than 876600h0m0s"
    assert admin.post("/users/me/keys/tokens", json={"lifetime": -1}).status_code == 400
    assert admin.post("/users/me/keys/tokens", json={"scope": "bogus"}).status_code == 500
    assert admin.post("/users/ghost/keys/tokens", json={}).status_code == 400
    assert admin.get("/users/me/keys/tokens/tokenconfig").json() == {"max_token_lifetime": 876600 * 3600 * 10**9}
    # session keys are not tokens
    session = admin.post("/users/me/keys").json()["key"]
    assert session.split("-")[0] not in {t["id"] for t in admin.get("/users/me/keys/tokens").json()}
    with client(fake, key) as ci_client:
        assert ci_client.get("/users/me").status_code == 200
    assert admin.delete(f"/users/me/keys/{key_id}").status_code == 204
    with client(fake, key) as ci_client:
        assert ci_client.get("/users/me").json()["detail"] == "API key is invalid."
    assert admin.post("/users/me/keys/tokens", json={"token_name": "ci"}).status_code == 201


# -- files ----------------------------------------------------------------------------
def make_tar(files: dict[str, str], dirs: tuple[str, ...] = ()) -> bytes:
    """A deterministic template archive, as `coder templates push` would build it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        entries = [(d.rstrip("/") + "/", None) for d in dirs] + sorted(files.items())
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                data = content.encode()
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


GOOD_TF = 'variable "region" {\n  default = "eu"\n}\nresource "null_resource" "x" {\n  triggers = { r = "${var.region}" }\n}\n'


def upload(c: httpx.Client, data: bytes, ctype: str = "application/x-tar") -> httpx.Response:
    return c.post("/files", content=data, headers={"Content-Type": ctype})


def test_files_dedup_and_content_type(fake, admin):
    data = make_tar({"main.tf": GOOD_TF})
    first = upload(admin, data)
    assert first.status_code == 201
    again = upload(admin, data)
    assert again.status_code == 200 and again.json() == first.json()  # `hash` holds the file id
    assert upload(admin, make_tar({"main.tf": GOOD_TF + "\n"})).status_code == 201
    r = upload(admin, data, "application/x-tar; charset=binary")
    assert r.status_code == 400 and r.json()["message"] == 'Unsupported content type header "application/x-tar; charset=binary".'
    assert upload(admin, data, "multipart/form-data").status_code == 400
    got = admin.get(f"/files/{first.json()['hash']}")
    assert got.content == data and got.headers["content-type"] == "application/x-tar"
    # dedup is per user
    fake.create_user("other", roles=("template-admin",))
    with client(fake, fake.token_for("other")) as other:
        assert upload(other, data).status_code == 201


def test_files_rate_limit_knob(fake, admin):
    fake.files_rate_limit = 2
    data = make_tar({"main.tf": GOOD_TF})
    assert [upload(admin, data).status_code for _ in range(3)] == [201, 200, 429]
    assert upload(admin, data).headers["Retry-After"] == "60"
    r = admin.post("/files", content=data, headers={"Content-Type": "application/x-tar", "X-Coder-Bypass-Ratelimit": "true"})
    assert r.status_code == 200  # owners may bypass


# -- template versions ----------------------------------------------------------------
def wait_job(c: httpx.Client, version_id: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = c.get(f"/templateversions/{version_id}").json()
        if v["job"]["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return v
        time.sleep(0.01)


def new_version(c: httpx.Client, files: dict[str, str], dirs: tuple[str, ...] = (), **extra) -> httpx.Response:
    fid = upload(c, make_tar(files, dirs)).json()["hash"]
    body = {"storage_method": "file", "provisioner": "terraform", "file_id": fid, **extra}
    return c.post("/organizations/default/templateversions", json=body)


def test_version_import_succeeds_with_logs(fake, admin):
    r = new_version(admin, {"main.tf": GOOD_TF}, message="Uploaded from the CLI")
    assert r.status_code == 201
    v = r.json()
    assert v["job"]["status"] == "pending" and v["matched_provisioners"]["count"] == 1
    assert v["name"]  # random docker-style name
    r = admin.get(f"/templateversions/{v['id']}/variables")
    assert r.status_code in (200, 403)
    done = wait_job(admin, v["id"])
    assert done["job"]["status"] == "succeeded" and "error" not in done["job"]
    logs = admin.get(f"/templateversions/{v['id']}/logs").json()
    assert logs and [lg["id"] for lg in logs] == sorted(lg["id"] for lg in logs)
    later = admin.get(f"/templateversions/{v['id']}/logs", params={"after": logs[1]["id"]}).json()
    assert [lg["id"] for lg in later] == [lg["id"] for lg in logs[2:]]
    r = admin.get(f"/templateversions/{v['id']}/logs", params={"follow": "false"})
    assert r.status_code == 400 and r.json()["message"] == "Failed to accept websocket."
    assert admin.get(f"/templateversions/{v['id']}/logs", params={"after": "x"}).status_code == 400
    variables = admin.get(f"/templateversions/{v['id']}/variables").json()
    assert variables == [{"name": "region", "description": "", "type": "string", "value": "eu",
                          "default_value": "eu", "required": False, "sensitive": False}]


def test_version_variables_403_until_done(fake, admin):
    fake.provisioner_paused = True
    v = new_version(admin, {"main.tf": GOOD_TF}).json()
    r = admin.get(f"/templateversions/{v['id']}/variables")
    assert r.status_code == 403 and r.json()["message"] == "Template version job has not finished"
    time.sleep(0.05)
    assert admin.get(f"/templateversions/{v['id']}").json()["job"]["status"] == "pending"
    fake.provisioner_paused = False
    assert wait_job(admin, v["id"])["job"]["status"] == "succeeded"


def test_no_provisioners_means_pending_forever(fake, admin):
    fake.provisioners = 0
    v = new_version(admin, {"main.tf": GOOD_TF}).json()
    assert v["matched_provisioners"]["count"] == 0
    time.sleep(0.05)
    job = admin.get(f"/templateversions/{v['id']}").json()["job"]
    assert job["status"] == "pending" and job["queue_position"] == 1
    r = admin.patch(f"/templateversions/{v['id']}/cancel")
    assert r.status_code == 200
    assert admin.get(f"/templateversions/{v['id']}").json()["job"]["status"] == "canceled"  # no worker: done at once
    assert admin.patch(f"/templateversions/{v['id']}/cancel").status_code == 400


def test_version_with_undeclared_variable_fails_like_terraform_plan(fake, admin):
    v = new_version(admin, {"main.tf": 'resource "null_resource" "x" {\n  triggers = { a = var.missing }\n}\n'}).json()
    done = wait_job(admin, v["id"])
    assert done["job"]["status"] == "failed"
    assert "terraform plan: Reference to undeclared input variable" in done["job"]["error"]
    logs = admin.get(f"/templateversions/{v['id']}/logs").json()
    assert any(lg["log_level"] == "error" and "undeclared input variable" in lg["output"] for lg in logs)
    marker = new_version(admin, {"main.tf": "# fake:fail-plan\n" + GOOD_TF}).json()
    assert wait_job(admin, marker["id"])["job"]["status"] == "failed"


def test_syntax_error_is_a_synchronous_500(fake, admin):
    r = new_version(admin, {"main.tf": 'resource "null_resource" "x" {\n  triggers = {}\n'})
    assert r.status_code == 500
    assert r.json()["message"] == "Internal error checking workspace tags"
    assert "main.tf" in r.json()["detail"]
    r = new_version(admin, {"main.tf": 'locals {\n  a = "unterminated\n}\n'})
    assert r.status_code == 500
    fid = upload(admin, b"this is not a tar archive at all" * 20).json()["hash"]
    r = admin.post("/organizations/default/templateversions",
                   json={"storage_method": "file", "provisioner": "terraform", "file_id": fid})
    assert r.status_code == 500 and r.json()["message"] == "Internal error checking workspace tags"


def test_required_variables_fail_the_job(fake, admin):
    tf = 'variable "a" {}\nvariable "b" {\n  type = string\n}\nvariable "c" {\n  default = "x"\n}\n'
    v = new_version(admin, {"main.tf": tf}, user_variable_values=[{"name": "b", "value": ""}]).json()
    done = wait_job(admin, v["id"])
    assert done["job"]["status"] == "failed"
    assert done["job"]["error_code"] == "REQUIRED_TEMPLATE_VARIABLES"
    assert done["job"]["error"].endswith("required template variables need values: a, b")
    names = [var["name"] for var in admin.get(f"/templateversions/{v['id']}/variables").json()]
    assert names == ["a", "b", "c"]  # still recorded
    ok = new_version(admin, {"main.tf": tf}, user_variable_values=[{"name": "a", "value": "1"}, {"name": "b", "value": "2"}])
    assert wait_job(admin, ok.json()["id"])["job"]["status"] == "succeeded"


def test_variables_are_inherited_from_the_active_version(fake, admin):
    tf = 'variable "token" {\n  sensitive = true\n}\n'
    v1 = new_version(admin, {"main.tf": tf}, user_variable_values=[{"name": "token", "value": "s3cret"}]).json()
    assert wait_job(admin, v1["id"])["job"]["status"] == "succeeded"
    t = admin.post("/organizations/default/templates", json={"name": "t1", "template_version_id": v1["id"]}).json()
    v2 = new_version(admin, {"main.tf": tf + "\n"}, template_id=t["id"]).json()
    assert wait_job(admin, v2["id"])["job"]["status"] == "succeeded"
    [var] = admin.get(f"/templateversions/{v2['id']}/variables").json()
    assert var["value"] == "*redacted*"


def test_tar_rules_fail_the_job(fake, admin):
    missing_dir = new_version(admin, {"main.tf": GOOD_TF, "mod/x.tf": "locals {}\n"}).json()
    done = wait_job(admin, missing_dir["id"])
    assert done["job"]["status"] == "failed" and "no such file or directory" in done["job"]["error"]
    with_dir = new_version(admin, {"main.tf": GOOD_TF, "mod/x.tf": "locals {}\n"}, dirs=("mod",)).json()
    assert wait_job(admin, with_dir["id"])["job"]["status"] == "succeeded"
    escape = new_version(admin, {"main.tf": GOOD_TF, "../evil.tf": "locals {}\n"}).json()
    assert "non-local path" in wait_job(admin, escape["id"])["job"]["error"]


def test_version_create_errors(fake, admin):
    fid = upload(admin, make_tar({"main.tf": GOOD_TF})).json()["hash"]
    base = {"storage_method": "file", "provisioner": "terraform", "file_id": fid}
    r = admin.post("/organizations/default/templateversions", json={**base, "storage_method": "s3"})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "storage_method"
    r = admin.post("/organizations/default/templateversions", json={**base, "name": "bad name"})
    assert r.status_code == 400
    r = admin.post("/organizations/default/templateversions",
                   json={**base, "file_id": "5c9ac4b2-52a5-4d43-9b64-34ec1c8f1c3c"})
    assert r.status_code == 404 and r.json()["message"] == "File not found."
    r = admin.post("/organizations/default/templateversions",
                   json={**base, "template_id": "5c9ac4b2-52a5-4d43-9b64-34ec1c8f1c3c"})
    assert r.status_code == 404 and r.json()["message"] == "Template does not exist."
    r = admin.post("/organizations/default/templateversions", json={**base, "example_id": "docker"})
    assert r.status_code == 400
    fake.create_user("member", roles=())
    with client(fake, fake.token_for("member")) as member:
        mfid = upload(member, make_tar({"main.tf": GOOD_TF})).json()["hash"]
        r = member.post("/organizations/default/templateversions", json={**base, "file_id": mfid})
        assert r.status_code == 500 and "unauthorized" in r.json()["detail"]


def test_duplicate_version_name_within_a_template(fake, admin):
    v1 = new_version(admin, {"main.tf": GOOD_TF}, name="v1").json()
    t = admin.post("/organizations/default/templates", json={"name": "dup", "template_version_id": v1["id"]}).json()
    r = new_version(admin, {"main.tf": GOOD_TF}, name="v1", template_id=t["id"])
    assert r.status_code == 409 and r.json()["validations"][0]["field"] == "name"
    assert new_version(admin, {"main.tf": GOOD_TF}, name="v1").status_code == 201  # orphans are never checked


# -- templates --------------------------------------------------------------------------
def built_version(c: httpx.Client, tf: str = GOOD_TF, **extra) -> dict:
    v = new_version(c, {"main.tf": tf}, **extra).json()
    return wait_job(c, v["id"])


def test_template_create_checks_in_order(fake, admin):
    v1 = built_version(admin)
    r = admin.post("/organizations/default/templates", json={"name": "ameide-dev", "template_version_id": v1["id"]})
    assert r.status_code == 201
    t = r.json()
    assert t["active_version_id"] == v1["id"] and t["activity_bump_ms"] == 3600000
    assert t["allow_user_cancel_workspace_jobs"] is False and t["allow_user_autostart"] is True
    assert admin.get("/organizations/coder/templates/AMEIDE-DEV").json()["id"] == t["id"]
    assert [x["name"] for x in admin.get("/organizations/default/templates").json()] == ["ameide-dev"]
    r = admin.post("/organizations/default/templates", json={"name": "Ameide-Dev", "template_version_id": v1["id"]})
    assert r.status_code == 409  # duplicate name first, case-insensitive
    r = admin.post("/organizations/default/templates", json={"name": "other", "template_version_id": v1["id"]})
    assert r.status_code == 400 and r.json()["message"].endswith("is already part of a template")
    r = admin.post("/organizations/default/templates",
                   json={"name": "other", "template_version_id": "5c9ac4b2-52a5-4d43-9b64-34ec1c8f1c3c"})
    assert r.status_code == 404
    v2 = built_version(admin)
    r = admin.post("/organizations/default/templates", json={"name": "other", "template_version_id": v2["id"], "default_ttl_ms": -1})
    assert r.status_code == 400 and r.json()["message"] == "Invalid create template request."
    r = admin.post("/organizations/default/templates",
                   json={"name": "other", "template_version_id": v2["id"], "max_port_share_level": "owner"})
    assert r.status_code == 400 and r.json()["message"].startswith("Restricting port sharing level is an enterprise feature")
    r = admin.post("/organizations/default/templates", json={"name": "bad_name", "template_version_id": v2["id"]})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "name"
    r = admin.post("/organizations/default/templates",
                   json={"name": "other", "template_version_id": v2["id"], "dormant_ttl_ms": 86400000})
    assert r.status_code == 201 and r.json()["time_til_dormant_ms"] == 0  # accepted, ignored in CE
    r = admin.get("/organizations/default/templates/missing")
    assert r.status_code == 404 and r.json() == {"message": "Resource not found or you do not have access to this resource"}


def test_failed_version_is_accepted_on_create_but_cannot_be_promoted(fake, admin):
    good = built_version(admin)
    t = admin.post("/organizations/default/templates", json={"name": "t", "template_version_id": good["id"]}).json()
    bad = built_version(admin, "# fake:fail-plan\n" + GOOD_TF, template_id=t["id"])
    assert bad["job"]["status"] == "failed"
    r = admin.patch(f"/templates/{t['id']}/versions", json={"id": bad["id"]})
    assert r.status_code == 403 and r.json()["message"] == "Only versions that have been built successfully can be promoted."
    orphan = built_version(admin)
    assert admin.patch(f"/templates/{t['id']}/versions", json={"id": orphan["id"]}).status_code == 400
    newer = built_version(admin, template_id=t["id"])
    r = admin.patch(f"/templates/{t['id']}/versions", json={"id": newer["id"]})
    assert r.status_code == 200 and r.json() == {"message": "Updated the active template version!"}
    assert admin.get(f"/templates/{t['id']}").json()["active_version_id"] == newer["id"]
    versions = admin.get(f"/templates/{t['id']}/versions").json()
    assert [v["id"] for v in versions] == [good["id"], bad["id"], newer["id"]]  # oldest first
    assert [v["id"] for v in admin.get(f"/templates/{t['id']}/versions", params={"limit": 1, "offset": 1}).json()] == [bad["id"]]
    assert [v["id"] for v in admin.get(f"/templates/{t['id']}/versions", params={"after_id": bad["id"]}).json()] == [newer["id"]]
    assert admin.get(f"/templates/{t['id']}/versions", params={"limit": -1}).status_code == 400
    assert admin.get(f"/templates/{t['id']}/versions", params={"after_id": orphan["id"]}).status_code == 200
    r = admin.get(f"/templates/{t['id']}/versions", params={"after_id": "5c9ac4b2-52a5-4d43-9b64-34ec1c8f1c3c"})
    assert r.status_code == 400


def test_patch_template_is_not_partial_and_304_when_unchanged(fake, admin):
    v = built_version(admin)
    t = admin.post("/organizations/default/templates",
                   json={"name": "t", "template_version_id": v["id"], "description": "d", "default_ttl_ms": 3600000}).json()
    # copy every field: nothing changed -> 304 with an empty body
    same = {k: t[k] for k in ("name", "display_name", "description", "icon", "default_ttl_ms", "activity_bump_ms",
                              "allow_user_autostart", "allow_user_autostop", "allow_user_cancel_workspace_jobs",
                              "failure_ttl_ms", "time_til_dormant_ms", "time_til_dormant_autodelete_ms",
                              "require_active_version", "autostop_requirement", "autostart_requirement")}
    r = admin.patch(f"/templates/{t['id']}", json=same)
    assert r.status_code == 304 and r.content == b""
    # leaving out allow_user_autostart/autostop is never "unchanged", and omitted fields are zeroed
    r = admin.patch(f"/templates/{t['id']}", json={"description": "d", "default_ttl_ms": 3600000})
    assert r.status_code == 200
    patched = r.json()
    assert patched["activity_bump_ms"] == 0 and patched["name"] == "t" and patched["allow_user_autostart"] is True
    r = admin.patch(f"/templates/{t['id']}", json={**same, "failure_ttl_ms": 1000})
    assert r.status_code == 400 and r.json()["validations"][0]["field"] == "failure_ttl_ms"
    other = built_version(admin)
    admin.post("/organizations/default/templates", json={"name": "taken", "template_version_id": other["id"]})
    assert admin.patch(f"/templates/{t['id']}", json={**same, "name": "taken"}).status_code == 409


# -- workspaces -------------------------------------------------------------------------
NOW = datetime.now(UTC)


def seed_fleet(fake: FakeCoderd) -> dict[str, str]:
    specs = [
        {"owner": "alice", "name": "ws1", "template": "ameide-dev", "last_used_at": NOW - timedelta(days=10)},
        {"owner": "alice", "name": "zeta", "template": "ameide-dev", "transition": "stop"},
        {"owner": "bob", "name": "ws1", "template": "other", "last_used_at": None},
        {"owner": "bob", "name": "busy", "template": "ameide-dev", "job_status": "running"},
        {"owner": "Carol", "name": "broken", "template": "ameide-dev", "job_status": "failed"},
        {"owner": "carol", "name": "queued", "template": "other", "transition": "stop", "job_status": "pending"},
        {"owner": "alice", "name": "asleep", "template": "other", "transition": "stop", "dormant_at": NOW},
    ]
    ids = fake.seed_workspaces(specs)
    return {f"{s['owner'].lower()}/{s['name']}": i for s, i in zip(specs, ids)}


def names(body: dict) -> list[str]:
    return [f"{w['owner_name']}/{w['name']}" for w in body["workspaces"]]


def test_workspace_listing_order_and_fields(fake, admin):
    seed_fleet(fake)
    body = admin.get("/workspaces").json()
    assert body["count"] == 7
    # running first (bob/busy's start is still running, so it is not), then owner, then name
    assert names(body) == ["alice/ws1", "bob/ws1", "alice/asleep", "alice/zeta", "bob/busy", "Carol/broken", "Carol/queued"]
    ws = body["workspaces"][0]
    assert ws["latest_build"]["status"] == "running" and ws["template_name"] == "ameide-dev"
    assert "ttl_ms" not in ws and "autostart_schedule" not in ws and ws["dormant_at"] is None
    assert ws["latest_build"]["deadline"] is None and ws["latest_build"]["reason"] == "initiator"
    bob_ws1 = next(w for w in body["workspaces"] if w["owner_name"] == "bob" and w["name"] == "ws1")
    assert bob_ws1["last_used_at"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "q,expected",
    [
        ("owner:alice", ["alice/ws1", "alice/asleep", "alice/zeta"]),
        ("OWNER:ALICE name:WS", ["alice/ws1"]),
        ("alice/ws", ["alice/ws1"]),
        ("ws1", ["alice/ws1", "bob/ws1"]),
        ("template:Ameide-Dev status:running", ["alice/ws1"]),
        ("status:starting", ["bob/busy"]),
        ("status:stopped", ["alice/asleep", "alice/zeta"]),
        ("status:failed", ["Carol/broken"]),
        ("status:pending", ["Carol/queued"]),
        ("owner:carol", ["Carol/broken", "Carol/queued"]),
        ("dormant:true", ["alice/asleep"]),
        ("dormant:false", ["alice/ws1", "bob/ws1", "alice/asleep", "alice/zeta", "bob/busy", "Carol/broken", "Carol/queued"]),
        ("owner:me", []),
    ],
)
def test_workspace_query(fake, admin, q, expected):
    seed_fleet(fake)
    assert names(admin.get("/workspaces", params={"q": q}).json()) == expected


def test_workspace_query_last_used_bounds_are_inclusive(fake, admin):
    ids = fake.seed_workspaces([
        {"owner": "alice", "name": "old", "last_used_at": datetime(2025, 1, 1, tzinfo=UTC)},
        {"owner": "alice", "name": "new", "last_used_at": datetime(2025, 3, 1, tzinfo=UTC)},
    ])
    q = 'last_used_before:"2025-01-01T00:00:00Z"'
    assert names(admin.get("/workspaces", params={"q": q}).json()) == ["alice/old"]
    q = 'last_used_after:"2025-01-01T00:00:00Z" owner:alice'
    assert names(admin.get("/workspaces", params={"q": q}).json()) == ["alice/new", "alice/old"]
    q = f"id:{ids[1]}"
    assert names(admin.get("/workspaces", params={"q": q}).json()) == ["alice/new"]


@pytest.mark.parametrize(
    "q,field",
    [("owner:a owner:b", "owner"), ("color:red", "color"), ("a:b:c", "q"), ("status:sleeping", "status"),
     ("last_used_before:2025-01-01T00:00:00Z", "q"), ("dormant:maybe", "dormant"), ("id:nope", "id")],
)
def test_workspace_query_errors(fake, admin, q, field):
    r = admin.get("/workspaces", params={"q": q})
    assert r.status_code == 400
    assert r.json()["message"] == "Invalid workspace search query."
    assert r.json()["validations"][0]["field"] == field


def test_workspace_pagination_count_ignores_limit(fake, admin):
    seed_fleet(fake)
    page = admin.get("/workspaces", params={"limit": 2, "offset": 2}).json()
    assert page["count"] == 7 and names(page) == ["alice/asleep", "alice/zeta"]
    assert admin.get("/workspaces", params={"offset": 6}).json()["count"] == 7
    assert admin.get("/workspaces", params={"limit": -1}).status_code == 400


def test_members_see_only_their_own(fake, admin):
    seed_fleet(fake)
    with client(fake, fake.token_for("bob")) as bob:
        assert names(bob.get("/workspaces").json()) == ["bob/ws1", "bob/busy"]
        assert names(bob.get("/workspaces", params={"q": "owner:me"}).json()) == ["bob/ws1", "bob/busy"]


def wait_build(c: httpx.Client, build_id: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        b = c.get(f"/workspacebuilds/{build_id}").json()
        if b["job"]["status"] in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
            return b
        time.sleep(0.01)


def test_stop_build_lifecycle_and_409_while_active(fake, admin):
    ids = seed_fleet(fake)
    ws_id = ids["alice/ws1"]
    fake.provisioner_delay = 0.1
    r = admin.post(f"/workspaces/{ws_id}/builds", json={"transition": "stop", "reason": "autostop"})
    assert r.status_code == 201
    build = r.json()
    assert build["job"]["status"] == "pending" and build["status"] == "pending"
    assert build["initiator_name"] == "admin" and build["reason"] == "initiator" and build["build_number"] == 2
    r = admin.post(f"/workspaces/{ws_id}/builds", json={"transition": "stop"})
    assert r.status_code == 409 and r.json()["message"] == "A workspace build is already active."
    done = wait_build(admin, build["id"])
    assert done["status"] == "stopped"
    ws = admin.get(f"/workspaces/{ws_id}").json()
    assert ws["latest_build"]["transition"] == "stop" and ws["latest_build"]["status"] == "stopped"
    # stopping a stopped workspace is not rejected: it queues another stop
    again = admin.post(f"/workspaces/{ws_id}/builds", json={"transition": "stop"})
    assert again.status_code == 201 and again.json()["build_number"] == 3
    # a seeded build that is still running blocks new builds
    assert admin.post(f"/workspaces/{ids['bob/busy']}/builds", json={"transition": "stop"}).status_code == 409
    assert admin.post(f"/workspaces/{ws_id}/builds", json={"transition": "pause"}).status_code == 400


def test_build_permissions(fake, admin):
    ids = seed_fleet(fake)
    fake.create_user("tadmin", roles=("template-admin",))
    with client(fake, fake.token_for("tadmin")) as tadmin:
        r = tadmin.post(f"/workspaces/{ids['alice/ws1']}/builds", json={"transition": "stop"})
        assert r.status_code == 403
    with client(fake, fake.token_for("bob")) as bob:
        assert bob.post(f"/workspaces/{ids['alice/ws1']}/builds", json={"transition": "stop"}).status_code == 404
        assert bob.post(f"/workspaces/{ids['bob/ws1']}/builds", json={"transition": "stop"}).status_code == 201


def test_deleted_workspace_is_gone(fake, admin):
    ids = seed_fleet(fake)
    ws_id = ids["alice/zeta"]
    b = admin.post(f"/workspaces/{ws_id}/builds", json={"transition": "delete"}).json()
    assert wait_build(admin, b["id"])["status"] == "deleted"
    r = admin.get(f"/workspaces/{ws_id}")
    assert r.status_code == 410
    assert admin.get(f"/workspaces/{ws_id}", params={"include_deleted": "true"}).status_code == 200
    assert "alice/zeta" not in names(admin.get("/workspaces").json())


def test_seeding_many_workspaces_pages_and_counts_them_all(fake, admin):
    """(How fast is a benchmark's business: benchmarks/ seeds 50,000 too.)"""
    fake.seed_workspaces(
        {"owner": f"user{i % 200}", "name": f"ws{i}", "template": "ameide-dev",
         "transition": "start" if i % 3 else "stop", "last_used_at": NOW - timedelta(hours=i % 500)}
        for i in range(50_000)
    )
    page = admin.get("/workspaces", params={"q": "status:running", "limit": 100}).json()
    again = admin.get("/workspaces", params={"q": "status:running", "limit": 100, "offset": 100}).json()
    assert page["count"] == again["count"] == 50_000 - len(range(0, 50_000, 3))
    assert len(page["workspaces"]) == 100


# -- reset -----------------------------------------------------------------------------
def test_reset_database_is_a_fresh_install(fake, admin):
    seed_fleet(fake)
    old_org = admin.get("/organizations/default").json()["id"]
    old_deployment = admin.get("/buildinfo").json()["deployment_id"]
    fake.reset_database()
    r = admin.get("/users/me")
    assert r.status_code == 401 and r.json()["detail"] == "API key is invalid."
    with client(fake) as c:
        assert c.get("/users/first").status_code == 404
        assert c.get("/buildinfo").json()["deployment_id"] != old_deployment
        created = c.post("/users/first", json=FIRST).json()
    assert created["organization_id"] != old_org
    with client(fake, fake.token_for("admin")) as again:
        assert again.get("/workspaces").json() == {"workspaces": [], "count": 0}
        assert again.get("/organizations/coder").json()["id"] == created["organization_id"]


def test_faults_apply_to_every_route(fake, admin):
    fake.faults.rate_limited = 1
    r = admin.get("/workspaces")
    assert r.status_code == 429 and r.headers["X-Coder-Build-Version"]
    assert admin.get("/workspaces").status_code == 200


# -- what a real coderd showed (BEHAVIOR.md §11) ----------------------------------------------
AUTH_TF = GOOD_TF + 'data "coder_external_auth" "gh" {\n  id = "github"\n}\n'


def test_external_auth_lists_the_configured_providers(fake, admin):
    assert admin.get("/external-auth").json() == {"providers": [], "links": []}  # none unless configured
    fake.external_auth_providers = ["github"]
    [provider] = admin.get("/external-auth").json()["providers"]
    assert provider["id"] == "github"


def test_an_import_naming_a_provider_coderd_lacks_fails_on_completion_after_a_good_plan(fake, admin):
    failed = built_version(admin, AUTH_TF)
    assert failed["job"]["status"] == "failed"
    assert failed["job"]["error"] == 'external auth provider "github" is not configured'
    logs = admin.get(f"/templateversions/{failed['id']}/logs").json()
    assert not [lg for lg in logs if lg["log_level"] == "error"]  # terraform planned fine
    in_module = new_version(admin, {"main.tf": GOOD_TF, "mod/x.tf": 'data "coder_external_auth" "a" {\n  id = "gitlab"\n}\n'},
                            dirs=("mod",)).json()
    assert "gitlab" in wait_job(admin, in_module["id"])["job"]["error"]  # the plan covers modules too
    fake.external_auth_providers = ["github"]
    assert built_version(admin, AUTH_TF)["job"]["status"] == "succeeded"


def test_an_orphan_version_has_the_nil_uuid_as_template_id(fake, admin):
    v = new_version(admin, {"main.tf": GOOD_TF}).json()
    assert v["template_id"] == "00000000-0000-0000-0000-000000000000"
    assert admin.get(f"/templateversions/{v['id']}").json()["template_id"] == v["template_id"]


def test_build_time_stats_keys_are_capitalised(fake, admin):
    v = built_version(admin)
    t = admin.post("/organizations/default/templates", json={"name": "stats", "template_version_id": v["id"]}).json()
    assert t["build_time_stats"]["start"] == {"P50": None, "P95": None}


def test_logout_deletes_the_key_it_was_called_with_and_only_that(fake):
    fake.create_user("admin", "admin@example.com", STRONG)
    tokens = []
    for _ in range(2):
        with client(fake) as c:  # a fresh client each time: a login cookie would trip the CSRF check
            tokens.append(c.post("/users/login", json={"email": "admin@example.com", "password": STRONG}).json()["session_token"])
    assert fake.api_key_count() == 2 == fake.api_key_count("password")
    with client(fake, tokens[0]) as c:
        r = c.post("/users/logout")
        assert r.status_code == 200 and r.json() == {"message": "Logged out!"}
        assert c.get("/users/me").status_code == 401
    assert fake.api_key_count() == 1
    with client(fake, tokens[1]) as c:
        assert c.get("/users/me").status_code == 200
