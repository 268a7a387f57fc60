"""Session hygiene: every run that logs in with a password revokes that session before it exits.

coderd inserts one API key row per password login and nothing purges them (BEHAVIOR.md §11): with
the chart's schedules, runs that never log out leave about 168 rows a day. Whatever the exit code
after the login, the fake must hold no more API keys afterwards than before.
"""

from __future__ import annotations

import pytest

from tests.conftest import CANARY_PASSWORD, run_job

ADMIN = ("platform-admin", "platform-admin@ameide.io")


@pytest.fixture
def env(templates_env, templates):
    return {**templates_env, "TEMPLATES_DIR": str(templates)}


def with_admin(fake, password: str = CANARY_PASSWORD) -> None:
    fake.create_user(*ADMIN, password)


def converge(fake, env) -> None:
    assert run_job("recover", env=env).rc == 0


def break_template(templates) -> None:
    main_tf = templates / "ameide-dev" / "main.tf"
    main_tf.write_text(main_tf.read_text() + '\noutput "oops" {\n  value = var.does_not_exist\n}\n')


def drift(templates) -> None:
    main_tf = templates / "ameide-gitops" / "main.tf"
    main_tf.write_text(main_tf.read_text() + "\n# drift\n")


SCENARIOS = [
    # (job, what coderd and the folder look like first, exit code)
    pytest.param("recover", lambda fake, env, tpl: None, 0, id="recover-fresh-coderd"),
    pytest.param("republish-templates", lambda fake, env, tpl: (with_admin(fake), env.update(CODER_ORGANIZATION="nope")), 2,
                 id="republish-unknown-organization"),
    pytest.param("recover", lambda fake, env, tpl: converge(fake, env), 0, id="recover-no-op"),
    pytest.param("bootstrap-admin", lambda fake, env, tpl: with_admin(fake), 0, id="bootstrap-admin-verify"),
    pytest.param("republish-templates", lambda fake, env, tpl: (converge(fake, env), break_template(tpl)), 1,
                 id="republish-failed-build"),
    pytest.param("doctor", lambda fake, env, tpl: (converge(fake, env), drift(tpl)), 1, id="doctor-drift"),
    pytest.param("reap", lambda fake, env, tpl: with_admin(fake), 0, id="reap"),
]


@pytest.mark.parametrize("job, given, rc", SCENARIOS)
def test_a_run_that_logged_in_leaves_no_more_api_keys_than_it_found(coderd, env, templates, job, given, rc):
    given(coderd, env, templates)
    before = coderd.api_key_count()
    coderd.clear_log()

    result = run_job(job, env=env)

    assert result.rc == rc, result.output
    assert coderd.requests("POST", "/users/login$"), "the scenario never logged in"
    assert coderd.api_key_count() <= before
    [logout] = coderd.requests("POST", "/users/logout$")
    assert logout.status == 200


def test_the_no_op_recover_stays_within_8_requests_logout_included(coderd, env):
    converge(coderd, env)
    coderd.clear_log()

    result = run_job("recover", env=env)

    assert result.rc == 0, result.output
    routes = [r.route for r in coderd.log]
    assert len(routes) <= 8, routes
    assert routes[-1] == "POST /api/v2/users/logout"


def test_a_run_whose_login_is_refused_has_nothing_to_log_out(coderd, env):
    with_admin(coderd, "Another-Secure-Passw0rd!")

    result = run_job("bootstrap-admin", env=env)

    assert result.rc == 1
    assert coderd.api_key_count() == 0 and coderd.requests("POST", "/users/logout$") == []


def test_a_session_token_run_never_logs_out_and_the_token_keeps_working(coderd, env):
    with_admin(coderd)
    token = coderd.token_for("platform-admin")
    token_env = {k: v for k, v in env.items() if k not in ("CODER_ADMIN_PASSWORD", "CODER_ADMIN_EMAIL")}

    for job in ("republish-templates", "reap"):
        assert run_job(job, env={**token_env, "CODER_SESSION_TOKEN": token}).rc == 0

    assert coderd.requests("POST", "/users/(login|logout)$") == []
    assert coderd.api_key_count() == 1
