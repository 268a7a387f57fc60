"""RUNBOOK.md cross-checks: every CronJob it names is rendered by the chart (values-dev.yaml,
release `coder-jobs`), every command that starts a job is well-formed, and every environment
variable of ours it mentions exists in the job settings."""

from __future__ import annotations

import re

import pytest

from tests.chart_helpers import ROOT, env_values, rendered

RUNBOOK = ROOT / "RUNBOOK.md"
# ALL_CAPS names that look like ours (the jobs' prefixes).
OURS = re.compile(r"\b((?:CODER|REAP|TEMPLATES?|EXTERNAL_AUTH|POD)_[A-Z0-9_]+)\b")
# Mentioned on purpose but read by coderd itself, not by coder-jobs.
CODERD_OWN = {"CODER_PG_CONNECTION_URL"}
CRONJOB_REF = re.compile(r"\bcronjobs?[/ ]([a-z0-9][-a-z0-9.]*[a-z0-9])(?![-a-z0-9<])", re.I)
CREATE_JOB = re.compile(r"kubectl (-n \S+ )?create job --from=cronjob/(\S+) (\S+)")


@pytest.fixture(scope="module")
def text() -> str:
    return RUNBOOK.read_text()


@pytest.fixture(scope="module")
def cronjobs() -> set[str]:
    return rendered(env_values("dev"), name="coder-jobs", namespace="coder").names("CronJob")


def test_every_cronjob_named_is_rendered(text: str, cronjobs: set[str]) -> None:
    named = set(CRONJOB_REF.findall(text))
    assert named, "the runbook names no CronJob"
    assert not named - cronjobs, f"RUNBOOK names CronJobs the chart does not render: {sorted(named - cronjobs)}"


def test_create_job_commands_are_exact(text: str, cronjobs: set[str]) -> None:
    commands = CREATE_JOB.findall(text)
    assert len(commands) >= 8
    for ns, source, name in commands:
        assert ns == "-n coder ", f"create job without the namespace: {source}"
        assert source in cronjobs
        assert name == f"{source}-manual-$(date", (source, name)
        # the resulting Job name (epoch has 10 digits) must be a valid Job name
        assert len(f"{source}-manual-1999999999") <= 63


def test_every_job_has_a_procedure_entry_point(text: str) -> None:
    for job in ("recover", "republish-templates", "bootstrap-admin", "sync-external-auth", "reap", "doctor"):
        assert f"--from=cronjob/coder-jobs-{job} " in text, job
    assert "--from=cronjob/coder-jobs-reap-dry-run " in text


def test_procedures_present(text: str) -> None:
    headings = [h.lower() for h in re.findall(r"^## (.+)$", text, re.M)]
    for topic in ("database reset", "templates missing", "credentials are rejected", "github oauth",
                  "bootstrap admin password", "reaper stopped the wrong workspace", "orphaned",
                  "hook is stuck", "another environment"):
        assert any(topic in h for h in headings), topic


def test_env_vars_exist_in_settings(text: str) -> None:
    from jobs.settings import known_env_vars

    known = known_env_vars()
    mentioned = set(OURS.findall(text)) - CODERD_OWN
    assert mentioned, "the runbook mentions no settings"
    unknown = sorted(mentioned - known)
    assert not unknown, f"RUNBOOK mentions variables the jobs do not read: {unknown}"
