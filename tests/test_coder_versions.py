"""Issue 21: the Coder releases the jobs support, each documented behaviour that differs between
them switched on in the fake (fakes/coderd_versions.py), and what a real coderd still showed."""

from __future__ import annotations

import pytest

from fakes.coderd import FakeCoderd
from fakes.coderd_versions import NEWEST, OLDEST
from jobs import coder_versions
from tests.conftest import (
    CANARY_PASSWORD,
    CANARY_SETUP_TOKEN,
    TEMPLATES_DIR,
    assert_no_secret,
    coder_writes,
    run_job,
)

BEHAVIOURS = pytest.mark.parametrize("behaviour", [OLDEST, NEWEST], ids=["oldest", "newest"])


@pytest.fixture
def fake(request):
    behaviour = getattr(request, "param", NEWEST)
    with FakeCoderd(behaviour=behaviour, setup_token=CANARY_SETUP_TOKEN if behaviour.setup_token else None,
                    external_auth_providers=("github",)) as f:
        yield f


def env_for(fake, **extra):
    return {"CODER_URL": fake.url, "CODER_ADMIN_USERNAME": "platform-admin", "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
            "CODER_ADMIN_PASSWORD": CANARY_PASSWORD, "CODER_READY_TIMEOUT": "20", "TEMPLATES_DIR": str(TEMPLATES_DIR),
            "TEMPLATE_BUILD_TIMEOUT": "30", **extra}


def humans(fake):
    return [u for u in fake.users.values() if u["username"] != "prebuilds"]


# -- the setup token (newest behaviour) ----------------------------------------------------
def test_without_a_setup_token_bootstrap_stops_before_creating_and_says_where_the_token_comes_from(fake):
    result = run_job("bootstrap-admin", env=env_for(fake))

    assert result.rc == 2, result.output
    [error] = result.errors()
    text = error["event"]
    assert "CODER_SETUP_TOKEN" in text and "log" in text and "setupTokenKey" in text and "RUNBOOK.md section 3a" in text
    assert fake.requests("POST", "/users/first$") == []
    assert humans(fake) == []
    assert_no_secret(result, CANARY_SETUP_TOKEN, CANARY_PASSWORD)


def test_with_the_right_setup_token_the_first_user_is_created_and_a_rerun_writes_nothing(fake):
    env = env_for(fake, CODER_SETUP_TOKEN=CANARY_SETUP_TOKEN)
    first = run_job("bootstrap-admin", env=env)
    fake.clear_log()
    again = run_job("bootstrap-admin", env=env)

    assert first.rc == 0, first.output
    assert again.rc == 0, again.output
    assert len(humans(fake)) == 1
    assert coder_writes(fake) == []
    assert_no_secret(first, CANARY_SETUP_TOKEN, CANARY_PASSWORD)
    assert_no_secret(again, CANARY_SETUP_TOKEN, CANARY_PASSWORD)


def test_a_wrong_setup_token_is_exit_1_with_coderds_answer_and_the_runbook_section(fake):
    result = run_job("bootstrap-admin", env=env_for(fake, CODER_SETUP_TOKEN="wrong-" + CANARY_SETUP_TOKEN))

    assert result.rc == 1, result.output
    [error] = result.errors()
    assert "CODER_SETUP_TOKEN" in error["event"] and "Invalid setup token." in error["event"]
    assert "RUNBOOK.md section 3a" in error["event"]
    assert humans(fake) == []
    assert_no_secret(result, CANARY_SETUP_TOKEN, CANARY_PASSWORD)


@BEHAVIOURS
def test_the_first_user_is_always_sent_with_trial_false(behaviour):
    with FakeCoderd(behaviour=behaviour) as fake:
        assert run_job("bootstrap-admin", env=env_for(fake)).rc == 0
        [post] = fake.requests("POST", "/users/first$")
    assert post.json()["trial"] is False


# -- bootstrap and republish at both ends of the range ------------------------------------
@pytest.mark.parametrize("fake", [OLDEST, NEWEST], ids=["oldest", "newest"], indirect=True)
def test_recover_converges_and_a_rerun_writes_nothing(fake):
    env = env_for(fake, CODER_SETUP_TOKEN=CANARY_SETUP_TOKEN) if fake.behaviour.setup_token else env_for(fake)
    first = run_job("recover", env=env)
    fake.clear_log()
    again = run_job("recover", env=env)

    assert first.rc == 0, first.output
    assert again.rc == 0, again.output
    assert coder_writes(fake) == []
    assert sorted(t["name"] for t in fake.templates.values()) == ["ameide-dev", "ameide-gitops"]


@pytest.mark.parametrize("fake", [OLDEST, NEWEST], ids=["oldest", "newest"], indirect=True)
def test_the_parameter_flow_is_sent_and_checked_on_a_coderd_that_knows_it_and_absent_otherwise(fake):
    env = env_for(fake, CODER_SETUP_TOKEN=CANARY_SETUP_TOKEN)
    assert run_job("recover", env=env).rc == 0
    creates = [r.json() for r in fake.requests("POST", "/organizations/[^/]+/templates$")]
    knows = fake.behaviour.parameter_flow

    assert len(creates) == 2
    assert all(("template_use_classic_parameter_flow" in body) is knows for body in creates)
    if not knows:
        return
    # The templates were written for the classic flow: that is what they get.
    assert all(t["use_classic_parameter_flow"] is True for t in fake.templates.values())
    # Someone switches one to dynamic parameters by hand: doctor sees it, republish puts it back.
    next(iter(fake.templates.values()))["use_classic_parameter_flow"] = False
    doctor = run_job("doctor", env=env)
    assert doctor.rc == 1
    assert any("use_classic_parameter_flow" in str(e.get("changes", "")) for e in doctor.events)
    fake.clear_log()
    assert run_job("republish-templates", env=env).rc == 0
    [patch] = fake.requests("PATCH", "/templates/[^/]+$")
    assert patch.json()["use_classic_parameter_flow"] is True
    assert all(t["use_classic_parameter_flow"] is True for t in fake.templates.values())


@pytest.mark.parametrize("fake", [OLDEST, NEWEST], ids=["oldest", "newest"], indirect=True)
def test_an_upload_that_meets_an_identical_one_is_read_as_already_uploaded(fake):
    fake.race_next_upload()

    result = run_job("recover", env=env_for(fake, CODER_SETUP_TOKEN=CANARY_SETUP_TOKEN))

    assert result.rc == 0, result.output
    assert len(fake.templates) == 2
    assert len(fake.files) == 2  # the raced bytes were stored once, and used


def test_buildinfo_outside_the_supported_range_is_a_warning_naming_the_range():
    with FakeCoderd(version="v2.45.1") as fake:
        result = run_job("bootstrap-admin", env=env_for(fake))

    assert result.rc == 0, result.output
    [warning] = [e for e in result.events if "outside the Coder versions" in e["event"]]
    assert warning["level"] == "warning" and coder_versions.SUPPORTED_RANGE in warning["event"]


def test_versions_are_read_as_releases_and_the_flow_is_known_from_v2_24():
    assert coder_versions.parse("v2.21.0-devel+a8c2586") == (2, 21, 0)
    assert not coder_versions.outside_range("v2.21.0-devel+a8c2586")
    assert coder_versions.outside_range("v2.20.3") and coder_versions.outside_range("v2.40.0")
    assert not coder_versions.knows_parameter_flow("v2.23.4")
    assert coder_versions.knows_parameter_flow("v2.24.0")


# -- what the real coderd still showed -----------------------------------------------------
def test_recover_on_a_fresh_database_with_an_unknown_organization_says_the_first_user_was_written(fake):
    result = run_job("recover", env=env_for(fake, CODER_SETUP_TOKEN=CANARY_SETUP_TOKEN, CODER_ORGANIZATION="nope"))

    # Exit 2 promises nothing was written; the first user was, so it is 1, and the message says so.
    assert result.rc == 1, result.output
    [error] = result.errors()
    assert "CODER_ORGANIZATION" in error["event"] and "'nope'" in error["event"]
    assert "the first user platform-admin was created" in error["event"] and "nothing else was written" in error["event"]
    assert [w.path for w in coder_writes(fake)] == ["/api/v2/users/first"]

    # The next attempt has a session before any write: it checks the organization first.
    fake.clear_log()
    again = run_job("recover", env=env_for(fake, CODER_ORGANIZATION="nope"))
    assert again.rc == 2 and "nothing was written" in again.errors()[0]["event"]
    assert coder_writes(fake) == []


def test_a_refused_session_token_is_named_when_falling_back_to_the_password_and_when_both_fail(coderd, admin_env):
    env = {**admin_env, "CODER_SESSION_TOKEN": "AAAAAAAAAA-bbbbbbbbbbbbbbbbbbbbbb", "TEMPLATES_DIR": str(TEMPLATES_DIR)}
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)

    fell_back = run_job("doctor", env=env)
    both_fail = run_job("doctor", env={**env, "CODER_ADMIN_PASSWORD": "Another-Pw-9x8c7v6b!"})

    assert [e for e in fell_back.events if e["level"] == "warning" and "CODER_SESSION_TOKEN" in e["event"]]
    assert both_fail.rc == 1
    [error] = both_fail.errors()
    assert "CODER_SESSION_TOKEN" in error["event"] and "CODER_ADMIN_PASSWORD" in error["event"]


def test_doctor_during_coderd_500s_retries_then_reports_could_not_check_with_exit_3(coderd, admin_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    coderd.database_outage(user_count_requests=10_000)

    result = run_job("doctor", env={**admin_env, "TEMPLATES_DIR": str(TEMPLATES_DIR), "CODER_READY_TIMEOUT": "2"})

    assert result.rc == 3, result.output
    assert len(coderd.requests("GET", "/users/first$")) > 1  # it retried
    [error] = result.errors()
    assert "could not check" in error["event"] and "drift" in error["event"]
    assert not [e for e in result.events if str(e.get("event", "")).startswith("drift ")]


def test_doctor_rides_out_a_short_outage_as_recover_does(coderd, admin_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    assert run_job("recover", env={**admin_env, "TEMPLATES_DIR": str(TEMPLATES_DIR)}).rc == 0
    coderd.database_outage(user_count_requests=3)

    result = run_job("doctor", env={**admin_env, "TEMPLATES_DIR": str(TEMPLATES_DIR)})

    assert result.rc == 0, result.output
