"""RUNBOOK.md cross-checks: every CronJob it names is rendered by the chart (values-dev.yaml,
release `coder-jobs`), every command that starts a job is well-formed, and every environment
variable of ours it mentions exists in the job settings."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.chart_helpers import ROOT, env_values, rendered

RUNBOOK = ROOT / "RUNBOOK.md"
# ALL_CAPS names that look like ours (the jobs' prefixes).
OURS = re.compile(r"\b((?:CODER|REAP|TEMPLATES?|EXTERNAL_AUTH|POD)_[A-Z0-9_]+)\b")
# Mentioned on purpose but read by coderd itself, not by coder-jobs.
CODERD_OWN = {"CODER_PG_CONNECTION_URL", "CODER_DEFAULT_TOKEN_LIFETIME", "CODER_MAX_TOKEN_LIFETIME"}
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


# ---------------------------------------------------------------- the commands, run on a real API server


def follow_block(text: str) -> str:
    section = text[text.index("Follow a job you started"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def job(kube, name: str) -> None:
    kube.put("job", "coder", {"metadata": {"name": name}, "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                                                 "containers": [{"name": "job", "image": "coder-jobs"}]}}}})


def set_status(kube, name: str, *conditions: str) -> None:
    """What the Job controller would write (nothing runs Jobs on the test server)."""
    now = "2026-12-01T00:00:00Z"
    status: dict = {"startTime": now, "conditions": [
        {"type": c, "status": "True", "reason": "Test", "message": "set by the test",
         "lastProbeTime": now, "lastTransitionTime": now} for c in conditions]}
    if "Complete" in conditions:
        status.update(completionTime=now, succeeded=1)
    else:
        status.update(failed=1)
    current = kube.get_object("job", "coder", name)
    current["status"] = status
    resp = kube.http.put(f"/apis/batch/v1/namespaces/coder/jobs/{name}/status", json=current)
    assert resp.status_code == 200, resp.text


def run_follow(kube, tmp_path, text: str, name: str, timeout: float = 60):
    from tests.kube.server import BIN

    script = follow_block(text).replace("<name>", name)
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace="coder", direct=True)}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


def test_follow_returns_at_once_on_a_failed_job_and_points_at_the_log(kube, tmp_path, text: str) -> None:
    job(kube, "coder-jobs-recover-manual-1")
    set_status(kube, "coder-jobs-recover-manual-1", "FailureTarget", "Failed")
    kube.clear_log()
    r = run_follow(kube, tmp_path, text, "coder-jobs-recover-manual-1")
    assert r.returncode != 0
    assert "kubectl -n coder logs job/coder-jobs-recover-manual-1" in r.stderr
    from tests.kube.cluster import JOBS

    reads = [e for e in kube.audit(JOBS) if e["verb"] == "get" and e.get("objectRef", {}).get("resource") == "jobs"]
    assert len(reads) == 1  # answered from the first look, no waiting round


def test_follow_fails_at_once_for_a_job_that_does_not_exist(kube, tmp_path, text: str) -> None:
    r = run_follow(kube, tmp_path, text, "coder-jobs-recover-manual-typo")
    assert r.returncode != 0 and "NotFound" in r.stderr.replace(" ", "") or "not found" in r.stderr


def test_latest_run_leaves_dry_runs_out(kube, tmp_path, text: str) -> None:
    from tests.kube.server import BIN

    command = re.search(r"^(kubectl -n coder get jobs -l .*)$", text, re.M).group(1)
    for name, dry in (("coder-jobs-reap-manual-1", "false"), ("coder-jobs-reap-dry-run-manual-2", "true")):
        kube.put("job", "coder", {"metadata": {"name": name, "labels": {
            "app.kubernetes.io/component": "reap", "coder-jobs/dry-run": dry}}, "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "job", "image": "coder-jobs"}]}}}})
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace="coder", direct=True)}
    r = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert names == ["coder-jobs-reap-manual-1"]


# ---------------------------------------------------------------- §3 (issue 20)

def section_3(text: str) -> str:
    return text[text.index("## 3."):text.index("## 4.")]


def test_section_3_takes_the_admin_from_the_values_and_makes_a_token_that_lasts(text: str) -> None:
    s3 = section_3(text)
    assert "ameide-admin" not in s3 and 'coder reset-password "$ADMIN"' in s3
    assert '[?(@.name=="CODER_ADMIN_USERNAME")]' in s3
    assert s3.index("coder login") < s3.index("coder tokens create")
    assert re.search(r"coder tokens create .*--lifetime \d+h", s3)
    assert "by **email only**" in s3 and "username *or* email" not in s3


def test_the_username_in_section_3_is_read_from_where_the_chart_writes_it(text: str) -> None:
    """The jsonpath of §3 finds CODER_ADMIN_USERNAME in the rendered bootstrap-admin CronJob."""
    from tests.chart_helpers import RELEASE, deep_merge, env_of, env_values, rendered

    values = deep_merge(env_values("dev"), {"coder": {"admin": {"username": "someone"}}})
    cronjob = rendered(values).get("CronJob", f"{RELEASE}-bootstrap-admin")
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env_of(cronjob)["CODER_ADMIN_USERNAME"]["value"] == "someone"
