"""Secrets are recognised by value, not by the name of the variable that holds them (issue 20):
a password inside CODER_URL never reaches any output, and a Secret's *name* is shown as a name.
Also the wording of the other inputs a new user got wrong first (issue 20, item 8)."""

from __future__ import annotations

import pytest

from jobs.cli import JOBS, build_parser
from tests.conftest import CANARY_PASSWORD, TEMPLATES_DIR, assert_no_secret, run_job

URL_WITH_PASSWORD = f"http://admin:{CANARY_PASSWORD}@127.0.0.1:9"


def env_for_every_job(tmp_path) -> dict[str, str]:
    """Enough for any job to get as far as its settings: only CODER_URL is wrong."""
    return {"CODER_URL": URL_WITH_PASSWORD, "CODER_ADMIN_USERNAME": "admin", "CODER_ADMIN_EMAIL": "admin@example.com",
            "CODER_ADMIN_PASSWORD": "Some-Other-Passw0rd-2026!", "TEMPLATES_DIR": str(TEMPLATES_DIR),
            "CODER_READY_TIMEOUT": "1", "POD_NAMESPACE": "coder"}


@pytest.mark.parametrize("job", [j for j in JOBS if j != "sync-external-auth"])
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_password_in_coder_url_is_refused_without_being_printed(job, log_format, tmp_path):
    result = run_job(job, env=env_for_every_job(tmp_path), log_format=log_format)
    assert result.rc == 2, result.output
    assert "CODER_URL" in result.output and "credentials" in result.output
    assert_no_secret(result, CANARY_PASSWORD, URL_WITH_PASSWORD)


def test_sync_external_auth_never_reads_coder_url_so_never_prints_it(tmp_path):
    """It talks to Kubernetes only; without a cluster it fails (exit 1) after its settings event."""
    env = env_for_every_job(tmp_path) | {"KUBECONFIG": str(tmp_path / "missing")}
    result = run_job("sync-external-auth", env=env)
    assert result.rc in (1, 2)
    assert_no_secret(result, CANARY_PASSWORD)


def test_secret_names_are_shown_as_names_in_the_settings_event(tmp_path):
    env = {"KUBECONFIG": str(tmp_path / "missing"), "EXTERNAL_AUTH_TARGET_SECRET": "coder-external-auth-github",
           "EXTERNAL_AUTH_CLIENT_SECRET_SECRET": "github-client-secret-source"}
    result = run_job("sync-external-auth", env=env)
    [settings] = result.find("settings")
    assert settings["EXTERNAL_AUTH_TARGET_SECRET"] == "coder-external-auth-github"
    assert settings["EXTERNAL_AUTH_CLIENT_SECRET_SECRET"] == "github-client-secret-source"


def test_an_invalid_target_secret_name_is_exit_2_before_any_write(tmp_path):
    env = {"KUBECONFIG": str(tmp_path / "missing"), "EXTERNAL_AUTH_TARGET_SECRET": "Coder_External_Auth"}
    result = run_job("sync-external-auth", env=env)
    assert result.rc == 2
    [error] = result.errors()
    assert error["problems"] == ["EXTERNAL_AUTH_TARGET_SECRET: is not a valid Kubernetes object name (lowercase "
                                 "letters, digits, '-' and '.', starting and ending with a letter or digit, at most "
                                 "253 characters)"]


@pytest.mark.parametrize("url, says", [
    ("coder.coder.svc", "needs a scheme and a host"),
    ("ftp://coder.coder.svc", "needs a scheme and a host"),
    ("http://coder:port", "is not a URL"),
    ("http://coder.coder.svc?x=1", "without ?query"),
])
def test_a_url_without_a_scheme_is_described_in_our_words_not_pydantics(url, says):
    result = run_job("reap", env={"CODER_URL": url, "CODER_SESSION_TOKEN": "abcdef-0123456789"})
    assert result.rc == 2
    [problem] = result.errors()[0]["problems"]
    assert problem.startswith("CODER_URL: ") and says in problem
    assert "relative URL" not in result.output and "Input should" not in result.output


def help_of(job: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "job")  # type: ignore[union-attr]
    return sub.choices[job].format_help()


def test_help_lists_the_choices_of_a_setting_and_what_delete_orphans_deletes():
    text = " ".join(help_of("reap").split())
    assert "--reap-quota-action report|stop" in text
    assert "pods, Deployments and coder-<id>-credentials Secrets" in text


def test_doctor_help_offers_no_dry_run_and_does_not_speak_of_publishing():
    text = help_of("doctor")
    assert "--dry-run" not in text and "publish" not in text
    assert "--dry-run" in help_of("republish-templates")
