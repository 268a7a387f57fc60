"""What a person reads: one message per bad configuration, errors that say what to check and
where in the RUNBOOK, --help that shows what is required, secret and defaulted."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from jobs.coder import CoderClient
from jobs.errors import DNS, REFUSED, TIMED_OUT, CoderUnavailable, connection_cause
from tests.conftest import CANARY_PASSWORD, assert_no_secret, coder_writes, run_job


def raised_from(cause: BaseException) -> httpx.ConnectError:
    """An httpx.ConnectError chained to `cause`, as httpx raises it over the socket's error."""
    try:
        try:
            raise cause
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
    except httpx.ConnectError as exc:
        return exc


@pytest.mark.parametrize("cause, expected", [
    (socket.gaierror(-2, "Name or service not known"), DNS),
    (socket.gaierror(-3, "Temporary failure in name resolution"), DNS),
    (ConnectionRefusedError(111, "Connection refused"), REFUSED),
    (TimeoutError("timed out"), TIMED_OUT),
])
def test_the_cause_of_a_failed_connection_is_named(cause, expected):
    assert connection_cause(raised_from(cause)) == expected


def test_a_connect_timeout_is_named_as_one():
    assert connection_cause(httpx.ConnectTimeout("")) == TIMED_OUT


def unreachable(handler_or_url) -> str:
    if isinstance(handler_or_url, str):
        client = CoderClient(handler_or_url, token="abcdefghij-0123456789abcdefghijkl", ready_timeout=0.2,
                             sleep=lambda s: None)
    else:
        client = CoderClient("http://coderd.test", token="abcdefghij-0123456789abcdefghijkl", ready_timeout=0.2,
                             sleep=lambda s: None, transport=httpx.MockTransport(handler_or_url))
    with pytest.raises(CoderUnavailable) as err, client:
        client.wait_ready()
    return str(err.value)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def test_a_refused_connection_says_so_what_to_check_and_where_in_the_runbook():
    message = unreachable(f"http://127.0.0.1:{closed_port()}")
    assert "last error: connection refused" in message
    assert "nothing listens on that port" in message and "coderd's pods" in message
    assert "RUNBOOK.md section 10, 'coderd unreachable'" in message


def test_a_failed_dns_lookup_and_a_timeout_say_different_things():
    def dns(request):
        raise raised_from(socket.gaierror(-2, "Name or service not known"))

    def timeout(request):
        raise httpx.ConnectTimeout("timed out")

    by_dns, by_timeout = unreachable(dns), unreachable(timeout)
    assert "DNS lookup failed" in by_dns and "does not resolve" in by_dns and "NetworkPolicy allows DNS" in by_dns
    assert "timed out" in by_timeout and "egress" in by_timeout
    assert "RUNBOOK.md section 10" in by_dns and "RUNBOOK.md section 10" in by_timeout


# ---------------------------------------------------------------- the CLI, end to end


def test_a_bad_url_and_a_too_short_idle_after_are_one_exit_2_message():
    result = run_job("reap", env={"CODER_URL": "not-a-url", "REAP_IDLE_AFTER": "2",
                                  "CODER_ADMIN_EMAIL": "a@b.io", "CODER_ADMIN_PASSWORD": CANARY_PASSWORD})
    assert result.rc == 2
    [error] = result.errors()
    assert "CODER_URL" in error["event"] and "REAP_IDLE_AFTER" in error["event"]
    assert [p.split(":")[0] for p in error["problems"]] == ["CODER_URL", "REAP_IDLE_AFTER"]
    assert result.stdout == ""  # nothing but the error, and that on stderr
    assert_no_secret(result, CANARY_PASSWORD)


def test_a_rules_file_with_two_bad_rules_names_both_by_id(coderd, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: gitops\n    template: ameide-gitops\n    idle_after: 8h\n"
                     "  - id: night-owls\n    owner: owl-*\n    idle_after: 1m\n"
                     "  - id: bots\n    owner: svc-*\n    exempt: sometimes\n")
    result = run_job("reap", env={"CODER_URL": coderd.url, "CODER_ADMIN_EMAIL": "a@b.io",
                                  "CODER_ADMIN_PASSWORD": CANARY_PASSWORD, "REAP_RULES_FILE": str(rules)})
    assert result.rc == 2
    [error] = result.errors()
    assert '2 of 3 rules are invalid: rule "night-owls" (rules[1])' in error["event"]
    assert 'rule "bots" (rules[2]): exempt: expected true or false' in error["event"]
    assert "gitops" not in error["event"]
    assert coderd.log == []  # exit 2 before any request


@pytest.fixture
def wrong_password_env(coderd, templates_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", "The-Real-Passw0rd-42!")
    return templates_env  # logs in with CANARY_PASSWORD: not the admin's


@pytest.mark.parametrize("job", ["reap", "republish-templates", "doctor"])
def test_a_wrong_admin_password_says_what_to_fix_and_where_not_a_bare_401(coderd, wrong_password_env, job):
    result = run_job(job, env=wrong_password_env)

    assert result.rc == 1
    message = result.errors()[-1]["event"]
    assert "refused the login with CODER_ADMIN_EMAIL/CODER_ADMIN_PASSWORD" in message
    assert "coder reset-password" in message and "RUNBOOK.md section 3" in message
    assert "-> HTTP 401" not in message
    assert not result.find("drift")  # doctor: a login problem is not template drift
    assert coder_writes(coderd) == []
    assert_no_secret(result, CANARY_PASSWORD)


def test_a_job_logs_its_effective_settings_once_without_secrets_and_closes_with_a_summary(coderd, templates_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    result = run_job("--dry-run", "republish-templates", env={**templates_env, "CODER_SETUP_TOKEN": "x" * 20})

    assert result.rc == 0, result.output
    [settings] = [e for e in result.events if e["event"] == "settings"]
    assert settings["TEMPLATES_DIR"] == templates_env["TEMPLATES_DIR"] and settings["CODER_ORGANIZATION"] == "default"
    assert settings["TEMPLATE_BUILD_TIMEOUT"] == 30 and settings["dry_run"] is True
    assert not {"CODER_ADMIN_PASSWORD", "CODER_SESSION_TOKEN", "CODER_SETUP_TOKEN"} & set(settings)
    assert result.events[-1]["event"] == "summary"
    # A dry run says what would change, under a key of its own: it changed nothing.
    assert {k: result.events[-1][k] for k in ("checked", "would_change", "deferred", "failed")} == {
        "checked": 2, "would_change": 2, "deferred": 0, "failed": 0}
    assert "changed" not in result.events[-1]
    assert result.stderr == ""
    assert_no_secret(result, CANARY_PASSWORD)


def test_the_console_shows_each_action_once_and_a_closing_table(coderd, templates_env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    result = run_job("--dry-run", "recover", env=templates_env, log_format="console")

    assert result.rc == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[2:4] for line in lines if " template/" in line] == [
        ["would", "create-template"], ["would", "create-template"]]
    head, row = lines[-2:]
    assert head.split()[2:] == ["summary", "checked", "would", "change", "deferred", "failed"]
    assert row.split() == ["recover", "(dry", "run)", "3", "2", "0", "0"]
    assert "'action'" not in result.stdout  # no Python repr of the plan
    assert_no_secret(result, CANARY_PASSWORD)


# ---------------------------------------------------------------- --help


def help_of(job: str) -> str:
    result = run_job(job, "--help")
    assert result.rc == 0
    return result.stdout


def test_help_marks_required_settings_shows_real_defaults_and_lists_the_secrets():
    text = help_of("bootstrap-admin")
    assert "(default: None)" not in text
    flat = " ".join(text.split())
    assert "[env CODER_URL] (required)" in flat and "[env CODER_ADMIN_USERNAME] (required)" in flat
    assert "[env CODER_READY_TIMEOUT] (default: 300)" in flat
    secrets = text.split("secrets (environment variables only")[1]
    for name in ("CODER_ADMIN_PASSWORD", "CODER_SESSION_TOKEN", "CODER_SETUP_TOKEN"):
        assert name in secrets and f"--{name.lower().replace('_', '-')}" not in text


def test_pod_namespace_has_one_default():
    flat = " ".join(help_of("sync-external-auth").split())
    entry = flat.split("--pod-namespace VALUE")[-1].split("--external-auth")[0]  # [-1]: past the usage line
    assert entry.count("default") + entry.count("unset") == 1, entry


def test_doctor_lists_only_the_settings_it_reads():
    text = help_of("doctor")
    for unused in ("--coder-admin-username", "--coder-admin-name", "--templates-revision", "--template-build-timeout"):
        assert unused not in text
    assert "--templates-dir" in text and "--coder-url" in text


def test_every_runbook_section_a_message_points_at_exists():
    from jobs import errors
    from tests.conftest import REPO

    headings = (REPO / "RUNBOOK.md").read_text()
    pointers = [errors.RUNBOOK_UNREACHABLE, errors.RUNBOOK_CREDENTIALS]
    for pointer in pointers:
        number, title = re.search(r"section (\d+), '([^']+)'", pointer).groups()
        assert f"\n## {number}. {title}\n" in headings, pointer

