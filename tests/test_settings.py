"""Settings: every bad variable named at once, flags win over env, and no input ends in a traceback."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jobs import settings as s
from jobs.errors import ConfigError

ENV_NAMES = sorted(s.known_env_vars())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("CODER_", "TEMPLATES", "TEMPLATE_", "REAP_", "EXTERNAL_AUTH", "POD_NAMESPACE")):
            monkeypatch.delenv(name)


def test_every_offending_variable_is_listed_in_one_error(monkeypatch):
    monkeypatch.setenv("CODER_URL", "not a url")
    monkeypatch.setenv("REAP_IDLE_AFTER", "soon")
    monkeypatch.setenv("REAP_MAX_STOPS", "-1")
    with pytest.raises(ConfigError) as err:
        s.load(s.ReapSettings)
    text = str(err.value)
    for name in ("CODER_URL", "REAP_IDLE_AFTER", "REAP_MAX_STOPS", "CODER_ADMIN_EMAIL and CODER_ADMIN_PASSWORD"):
        assert name in text


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("CODER_URL", "http://from-env:1")
    monkeypatch.setenv("CODER_SESSION_TOKEN", "abcdefghij-0123456789abcdefghijkl")
    loaded = s.load(s.CoderSettings, {"coder_url": "http://from-flag:2"})
    assert str(loaded.coder_url).startswith("http://from-flag:2")


def test_secret_values_are_never_part_of_the_error(monkeypatch):
    monkeypatch.setenv("CODER_URL", "http://c")
    monkeypatch.setenv("CODER_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("CODER_ADMIN_EMAIL", "admin@example.com")
    monkeypatch.setenv("CODER_ADMIN_PASSWORD", "weakling")
    from jobs.bootstrap_admin import first_user_problems  # coderd's rules run where the first user is created

    problems = "; ".join(first_user_problems(s.load(s.BootstrapSettings)))
    assert "weakling" not in problems and "CODER_ADMIN_PASSWORD" in problems


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(st.sampled_from(ENV_NAMES), st.text(max_size=40).filter(lambda v: "\0" not in v), max_size=12),
       cls=st.sampled_from(s.ALL_SETTINGS))
def test_any_environment_ends_in_settings_or_a_config_error(monkeypatch, env, cls):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        s.load(cls)
    except ConfigError as err:
        assert err.exit_code == 2 and str(err)
    finally:
        for name in env:
            monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("cls", [s.ReapSettings, s.TemplatesSettings, s.RecoverSettings, s.BootstrapSettings])
def test_admin_credentials_are_not_judged_locally_coderd_answers_the_login(monkeypatch, cls):
    # Only bootstrap-admin's create path applies coderd's rules (issue 13): an existing admin
    # whose email or password a local rule disliked could otherwise run no job at all.
    for name, value in {"CODER_URL": "http://c", "CODER_ADMIN_EMAIL": "ü@localhost", "CODER_ADMIN_PASSWORD": "short",
                        "CODER_ADMIN_USERNAME": "platform-admin", "TEMPLATES_DIR": "/"}.items():
        monkeypatch.setenv(name, value)
    assert s.load(cls).coder_admin_email == "ü@localhost"


@pytest.mark.parametrize("token", ["\x80", "has space-abc", "Bearer abc", "nodash"])
def test_a_session_token_that_is_not_coders_shape_is_exit_2_without_the_value(monkeypatch, token):
    monkeypatch.setenv("CODER_URL", "http://c")
    monkeypatch.setenv("CODER_SESSION_TOKEN", token)
    with pytest.raises(ConfigError, match="CODER_SESSION_TOKEN") as err:
        s.load(s.CoderSettings)
    assert token not in str(err.value)


def test_a_bad_url_and_an_idle_after_below_the_floor_are_named_in_one_error(monkeypatch):
    # REAP_IDLE_AFTER=2 (seconds) used to pass here and fail later, alone, in the reaper's policy.
    monkeypatch.setenv("CODER_URL", "not-a-url")
    monkeypatch.setenv("REAP_IDLE_AFTER", "2")
    monkeypatch.setenv("CODER_SESSION_TOKEN", "abcdefghij-0123456789abcdefghijkl")
    with pytest.raises(ConfigError) as err:
        s.load(s.ReapSettings)
    assert [p.split(":")[0] for p in err.value.problems] == ["CODER_URL", "REAP_IDLE_AFTER"]
    assert "shorter than 5m" in str(err.value)


def test_exemptions_and_the_rules_file_are_checked_with_the_other_settings(monkeypatch, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: a\n    owner: x\n  - id: b\n    exempt: maybe\n")
    monkeypatch.setenv("CODER_URL", "http://c")
    monkeypatch.setenv("CODER_SESSION_TOKEN", "abcdefghij-0123456789abcdefghijkl")
    monkeypatch.setenv("REAP_EXEMPT", "justaname")
    monkeypatch.setenv("REAP_RULES_FILE", str(rules))
    with pytest.raises(ConfigError) as err:
        s.load(s.ReapSettings)
    exempt, rules_problem = err.value.problems
    assert exempt.startswith("REAP_EXEMPT: entry 0 ('justaname')")
    assert rules_problem.startswith(f"REAP_RULES_FILE: {rules}: 2 of 2 rules are invalid")
    assert 'rule "a" (rules[0])' in rules_problem and 'rule "b" (rules[1])' in rules_problem


def test_doctor_settings_are_only_what_doctor_reads():
    assert set(s.DoctorSettings.model_fields) == {
        "coder_url", "coder_session_token", "coder_admin_email", "coder_admin_password", "coder_organization",
        "coder_ready_timeout", "coder_request_timeout", "templates_dir", "templates"}


def test_the_settings_logged_at_start_hold_no_secret(monkeypatch):
    monkeypatch.setenv("CODER_URL", "http://c")
    monkeypatch.setenv("CODER_ADMIN_EMAIL", "admin@example.com")
    monkeypatch.setenv("CODER_ADMIN_PASSWORD", "Canary-Pw-7f3kq9Zx!2vB")
    monkeypatch.setenv("CODER_SESSION_TOKEN", "abcdefghij-0123456789abcdefghijkl")
    shown = s.load(s.ReapSettings).public_values()
    assert shown["CODER_URL"] == "http://c/" and shown["REAP_IDLE_AFTER"] == "2h" and shown["REAP_MAX_STOPS"] == 20
    assert "CODER_ADMIN_PASSWORD" not in shown and "CODER_SESSION_TOKEN" not in shown
    assert "Canary-Pw-7f3kq9Zx!2vB" not in repr(shown)
