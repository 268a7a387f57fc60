"""bootstrap-admin against the coderd fake, run as a real process."""

from __future__ import annotations

import pytest

from fakes.coderd import FakeCoderd
from tests.conftest import CANARY_PASSWORD, CANARY_SETUP_TOKEN, assert_no_secret, coder_writes, run_job, run_jobs_at_once


def real_users(fake):
    return [u for u in fake.users.values() if u["username"] != "prebuilds"]


def test_creates_the_first_user_with_the_configured_fields(coderd, admin_env):
    result = run_job("bootstrap-admin", env=admin_env)

    assert result.rc == 0, result.output
    [user] = real_users(coderd)
    assert (user["username"], user["email"], user["name"]) == ("platform-admin", "platform-admin@ameide.io", "Platform Admin")
    created = result.find("created the first user")
    assert created and created[0]["user_id"] == user["id"]
    [post] = coderd.requests("POST", "/users/first$")
    assert post.json()["trial"] is False
    assert "setup_token" not in post.json()
    assert_no_secret(result, CANARY_PASSWORD)


def test_second_run_writes_nothing_and_exits_0(coderd, admin_env):
    assert run_job("bootstrap-admin", env=admin_env).rc == 0
    coderd.clear_log()

    result = run_job("bootstrap-admin", env=admin_env)

    assert result.rc == 0, result.output
    assert coder_writes(coderd) == []
    assert result.find("configured credentials log in")
    assert_no_secret(result, CANARY_PASSWORD)


def test_waits_for_coderd_that_refuses_its_first_connections_then_answers_503(coderd, admin_env):
    coderd.down_for_requests(refuse=3, unavailable=3)  # counted, so a slow start cannot miss it

    result = run_job("bootstrap-admin", env={**admin_env, "CODER_READY_TIMEOUT": "30"})

    assert result.rc == 0, result.output
    assert len(real_users(coderd)) == 1


def test_gives_up_after_the_ready_timeout_naming_url_and_deadline(coderd, admin_env):
    coderd.unavailable_for(60, mode="503")

    result = run_job("bootstrap-admin", env={**admin_env, "CODER_READY_TIMEOUT": "3"})

    assert result.rc == 1
    [error] = result.errors()
    assert coderd.url in error["event"] and "3s" in error["event"] and "CODER_READY_TIMEOUT" in error["event"]
    assert real_users(coderd) == []


def test_two_concurrent_runs_both_succeed_and_create_one_user(coderd, admin_env):
    results = run_jobs_at_once("bootstrap-admin", env=admin_env)

    assert [r.rc for r in results] == [0, 0], [r.output for r in results]
    assert len(real_users(coderd)) == 1


def test_two_runs_that_both_pass_coderds_409_check_both_exit_0_and_create_one_user(coderd, admin_env):
    """The race as a real coderd runs it: the loser's insert hits the email index, 500 not 409."""
    coderd.race_first_user(2)
    results = run_jobs_at_once("bootstrap-admin", env=admin_env)

    assert [r.rc for r in results] == [0, 0], [r.output for r in results]
    assert len(real_users(coderd)) == 1
    assert sorted(r.status for r in coderd.requests("POST", "/users/first$")) == [201, 500]
    [lost] = [e for r in results for e in r.find("another run created the first user first")]
    assert "idx_users_email" in lost["answer"]


def test_a_weak_password_for_a_new_first_user_is_exit_2_before_anything_is_written(coderd, admin_env):
    result = run_job("bootstrap-admin", env={**admin_env, "CODER_ADMIN_PASSWORD": "password123"})

    assert result.rc == 2
    [error] = result.errors()
    assert "CODER_ADMIN_PASSWORD" in error["event"] and "not strong enough" in error["event"]
    assert "password123" not in result.output
    assert coderd.writes() == []  # not even a login: only buildinfo and GET /users/first were read


def test_invalid_username_for_a_new_first_user_is_exit_2_naming_the_field(coderd, admin_env):
    result = run_job("bootstrap-admin", env={**admin_env, "CODER_ADMIN_USERNAME": "platform_admin"})

    assert result.rc == 2
    assert "CODER_ADMIN_USERNAME" in result.errors()[0]["event"]
    assert coderd.writes() == []


def test_dry_run_refuses_a_first_user_coderd_would_refuse(coderd, admin_env):
    result = run_job("--dry-run", "bootstrap-admin", env={**admin_env, "CODER_ADMIN_EMAIL": "admin@localhost"})

    assert result.rc == 2
    assert "CODER_ADMIN_EMAIL" in result.errors()[0]["event"]
    assert coderd.writes() == []


@pytest.mark.parametrize("password, email", [
    ("cjtrmqvbvczw", "platform-admin@ameide.io"),  # coderd accepts it (a real `coder reset-password` did)
    ("short", "platform-admin@ameide.io"),  # set before coderd had rules: only coderd may judge a login
    ("Legacy-Passw0rd-42", "ü@ex.com"),
    ("Legacy-Passw0rd-42", '"quoted"@ex.com'),
])
def test_an_existing_admin_is_verified_by_coderd_and_never_refused_locally(coderd, admin_env, password, email):
    coderd.create_user("platform-admin", email, password)

    result = run_job("bootstrap-admin", env={**admin_env, "CODER_ADMIN_PASSWORD": password, "CODER_ADMIN_EMAIL": email})

    assert result.rc == 0, result.output
    assert result.find("configured credentials log in")


def test_every_missing_variable_is_named_at_once(coderd):
    result = run_job("bootstrap-admin", env={"CODER_ADMIN_PASSWORD": CANARY_PASSWORD})

    assert result.rc == 2
    message = result.errors()[0]["event"]
    for name in ("CODER_URL", "CODER_ADMIN_USERNAME", "CODER_ADMIN_EMAIL"):
        assert name in message
    assert_no_secret(result, CANARY_PASSWORD)


def test_wrong_credentials_against_an_existing_first_user_fail_with_a_runbook_pointer(coderd, admin_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", "Another-Secure-Passw0rd!")

    result = run_job("bootstrap-admin", env=admin_env)

    assert result.rc == 1
    message = result.errors()[0]["event"]
    assert "refused the login with CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD" in message and "RUNBOOK.md section 3" in message
    assert coder_writes(coderd) == []
    assert_no_secret(result, CANARY_PASSWORD)


def test_dry_run_on_a_fresh_coderd_prints_the_plan_and_writes_nothing(coderd, admin_env):
    result = run_job("--dry-run", "bootstrap-admin", env=admin_env)

    assert result.rc == 0, result.output
    [plan] = result.find("plan")[:1]
    assert plan["dry_run"] is True
    assert plan["actions"][0]["action"] == "create-first-user"
    assert coderd.writes() == []
    assert real_users(coderd) == []


def test_setup_token_is_sent_only_when_configured(admin_env):
    with FakeCoderd(setup_token=CANARY_SETUP_TOKEN) as fake:
        env = {**admin_env, "CODER_URL": fake.url}
        refused = run_job("bootstrap-admin", env=env)
        # A coderd that does not announce the requirement: its refusal is read as the missing setting.
        assert refused.rc == 2
        assert "CODER_SETUP_TOKEN" in refused.errors()[0]["event"]
        assert real_users(fake) == []

        accepted = run_job("bootstrap-admin", env={**env, "CODER_SETUP_TOKEN": CANARY_SETUP_TOKEN})
        assert accepted.rc == 0, accepted.output
        assert len(real_users(fake)) == 1
        assert_no_secret(accepted, CANARY_SETUP_TOKEN, CANARY_PASSWORD)
        assert_no_secret(refused, CANARY_PASSWORD)


def test_flags_override_the_environment(coderd, admin_env):
    result = run_job("bootstrap-admin", "--coder-admin-username", "flag-admin", env=admin_env)

    assert result.rc == 0, result.output
    assert real_users(coderd)[0]["username"] == "flag-admin"


def test_coders_own_400_is_exit_2_with_its_validation_text_and_never_the_value():
    """Local rules mirror coderd's; should coderd still refuse (a newer rule), its text is shown."""
    import httpx
    import pytest

    from jobs.bootstrap_admin import converge
    from jobs.coder import CoderClient
    from jobs.context import RunContext
    from jobs.errors import ConfigError
    from jobs.settings import BootstrapSettings

    def handler(request):
        if request.url.path == "/api/v2/users/authmethods":
            return httpx.Response(200, json={"password": {"enabled": True}})
        if request.url.path == "/api/v2/users/first" and request.method == "GET":
            return httpx.Response(404, json={"message": "The initial user has not been created!"},
                                  headers={"X-Coder-Build-Version": "v2"})
        return httpx.Response(400, json={"message": "Password not strong enough!",
                                         "validations": [{"field": "password", "detail": "insecure password, try a longer one"}]})

    settings = BootstrapSettings(coder_url="http://coderd.test", coder_admin_username="admin",
                                 coder_admin_email="admin@ameide.io", coder_admin_password=CANARY_PASSWORD)
    client = CoderClient("http://coderd.test", transport=httpx.MockTransport(handler))

    class Log:
        def __getattr__(self, name):
            return lambda *a, **k: None

    with pytest.raises(ConfigError) as err:
        converge(client, settings, RunContext(dry_run=False, log=Log()))
    assert err.value.exit_code == 2
    assert "Password not strong enough!" in str(err.value) and "password: insecure password" in str(err.value)
    assert CANARY_PASSWORD not in str(err.value)
