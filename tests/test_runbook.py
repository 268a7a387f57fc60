"""RUNBOOK.md cross-checks: every CronJob it names is rendered by the chart (values-dev.yaml,
release `coder-jobs`), every command that starts a job is well-formed, and every environment
variable of ours it mentions exists in the job settings."""

from __future__ import annotations

import re
import subprocess
import textwrap

import pytest

from tests.chart_helpers import ROOT, env_values, rendered
from tests.conftest import CANARY_PASSWORD, assert_no_secret, run_job
from tests.test_chart_install import admin_kubeconfig, crds

__all__ = ["admin_kubeconfig", "crds"]  # fixtures shared with test_chart_install

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
    return text[text.index("## 3."):text.index("## 3a.")]


def shell_blocks(section: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


IN_CODERD_POD = "kubectl -n coder exec -it deploy/coder -- "


def test_section_3_takes_the_admin_from_the_values_and_makes_a_token_that_lasts(text: str) -> None:
    s3 = section_3(text)
    assert "ameide-admin" not in text
    assert 'coder reset-password "$ADMIN"' in s3 and '[?(@.name=="CODER_ADMIN_USERNAME")]' in s3
    assert "coder login" not in s3 and "coder tokens" not in s3  # the CLI cannot log in without a browser
    assert "by **email only**" in s3 and "username *or* email" not in s3
    # Only the password reset needs coderd's pod (it writes to the database), and the text says so.
    in_pod = [b for b in shell_blocks(s3) if IN_CODERD_POD in b]
    assert len(in_pod) == 1 and "inside coderd's pod" in s3


def test_the_username_in_section_3_is_read_from_where_the_chart_writes_it(text: str) -> None:
    """The jsonpath of §3 finds CODER_ADMIN_USERNAME in the rendered bootstrap-admin CronJob."""
    from tests.chart_helpers import RELEASE, deep_merge, env_of, env_values, rendered

    values = deep_merge(env_values("dev"), {"coder": {"admin": {"username": "someone"}}})
    cronjob = rendered(values).get("CronJob", f"{RELEASE}-bootstrap-admin")
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env_of(cronjob)["CODER_ADMIN_USERNAME"]["value"] == "someone"


ADMIN_EMAIL = "ops-admin@example.com"
STALE_TOKEN = "Zz9Zz9Zz9Z-stalestalestalestalesta"


def section_3_cluster(kube, coder_url: str) -> None:
    """Namespace coder as the dev render leaves it, coderd at `coder_url`: the CronJobs §3 reads and
    starts, and their Secret with the right password and a token coderd no longer knows."""
    from tests.chart_helpers import RELEASE, deep_merge, env_values, rendered

    values = deep_merge(env_values("dev"), {"coder": {"url": coder_url, "admin": {"email": ADMIN_EMAIL}}})
    render = rendered(values)
    kube.ensure_namespace("coder")
    for job_name in ("bootstrap-admin", "doctor", "republish-templates"):
        kube.put("cronjob", "coder", render.get("CronJob", f"{RELEASE}-{job_name}"))
    kube.put("secret", "coder", {"metadata": {"name": "coder-bootstrap-admin"},
                                 "stringData": {"password": CANARY_PASSWORD, "session-token": STALE_TOKEN}})


def run_blocks(kube, tmp_path, script: str, *, coder_url: str = "", stdin: str = ""):
    """`script` in bash as a person pastes it: kubectl against the test's API server as namespace
    coder's admin, and CODER_URL set as §3 asks."""
    from tests.kube.server import BIN

    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path),
           "KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace="coder", direct=True)}
    if coder_url:
        env["CODER_URL"] = coder_url
    return subprocess.run(["bash", "-c", script], input=stdin, env=env, capture_output=True, text=True, timeout=120)


def run_as_the_job_controller(kube, job_obj: dict):
    """What the Job controller and kubelet would do with a Job (or a CronJob's template): run its
    container's command with its env, Secret references resolved from the Secret as it is now, and
    the templates volume (the chart's ConfigMaps of chart/files/coder-templates) at TEMPLATES_DIR."""
    from tests.chart_helpers import env_of, subcommand
    from tests.conftest import TEMPLATES_DIR

    env = {}
    for var, spec in env_of(job_obj).items():
        if "value" in spec:
            env[var] = spec["value"]
        elif "secretKeyRef" in spec.get("valueFrom", {}):
            ref = spec["valueFrom"]["secretKeyRef"]
            value = (kube.secret_data("coder", ref["name"]) or {}).get(ref["key"])
            if value is not None:
                env[var] = value
    if "TEMPLATES_DIR" in env:
        env["TEMPLATES_DIR"] = str(TEMPLATES_DIR)
    return run_job(subcommand(job_obj), env=env), env


def jobs_from(kube, cronjob: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in kube.objects("job", "coder")
                  if j["metadata"]["name"].startswith(f"{cronjob}-manual-"))


def test_section_3_makes_a_token_through_coderds_api_and_the_job_then_runs_with_it(kube, coderd, tmp_path, text) -> None:
    """The token blocks of §3, run as written against the coderd fake (CODER_URL, the one placeholder)
    and the real API server: a login, a token of a year, the login ended, the token in the Secret
    key the CronJob reads; the Job they start succeeds with that token and never logs in."""
    from tests.chart_helpers import RELEASE

    coderd.create_user("ameide-admin", ADMIN_EMAIL, password=CANARY_PASSWORD)
    section_3_cluster(kube, coderd.url)
    # The templates are published (by a run that fell back to the password), so doctor sees no drift.
    published, _ = run_as_the_job_controller(kube, kube.get_object("cronjob", "coder", f"{RELEASE}-republish-templates"))
    assert published.rc == 0 and published.find("refused CODER_SESSION_TOKEN"), published.output
    coderd.clear_log()

    s3 = section_3(text)
    token_blocks = shell_blocks(s3[s3.index("refused CODER_SESSION_TOKEN"):])
    assert len(token_blocks) == 3
    r = run_blocks(kube, tmp_path, "\n".join(token_blocks), coder_url=coderd.url, stdin=CANARY_PASSWORD + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "token created; it lasts 8760h" in r.stdout
    token = kube.secret_data("coder", "coder-bootstrap-admin")["session-token"]
    assert token != STALE_TOKEN and kube.secret_data("coder", "coder-bootstrap-admin")["password"] == CANARY_PASSWORD
    for secret in (CANARY_PASSWORD, token):
        assert secret not in r.stdout + r.stderr
    # coderd: one token of exactly a year, named for the jobs; the runbook's login session is ended.
    [record] = [k for k in coderd.keys.values() if k["login_type"] == "token"]
    assert token.startswith(record["id"] + "-")
    assert record["lifetime_seconds"] == 8760 * 3600 and record["token_name"].startswith("coder-jobs-")
    assert len(coderd.requests("POST", r"/users/login$")) == len(coderd.requests("POST", r"/users/logout$")) == 1

    [job_name] = jobs_from(kube, f"{RELEASE}-doctor")
    coderd.clear_log()
    result, env = run_as_the_job_controller(kube, kube.get_object("job", "coder", job_name))
    assert env["CODER_SESSION_TOKEN"] == token
    assert result.rc == 0, result.output
    assert coderd.requests("POST", r"/users/login$") == []  # the token was used; no fallback to the password
    assert not result.find("refused CODER_SESSION_TOKEN")
    assert_no_secret(result, CANARY_PASSWORD, token)


def test_section_3_refuses_a_lifetime_above_coderds_maximum_by_asking_for_the_maximum(kube, coderd, tmp_path,
                                                                                      text) -> None:
    """Where CODER_MAX_TOKEN_LIFETIME is shorter than a year, the token gets coderd's maximum."""
    coderd.create_user("ameide-admin", ADMIN_EMAIL, password=CANARY_PASSWORD)
    coderd.max_token_lifetime_s = 720 * 3600
    section_3_cluster(kube, coderd.url)
    s3 = section_3(text)
    r = run_blocks(kube, tmp_path, "\n".join(shell_blocks(s3[s3.index("refused CODER_SESSION_TOKEN"):])),
                   coder_url=coderd.url, stdin=CANARY_PASSWORD + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "it lasts 720h" in r.stdout


def test_section_3_stores_nothing_when_the_password_is_wrong(kube, coderd, tmp_path, text) -> None:
    coderd.create_user("ameide-admin", ADMIN_EMAIL, password=CANARY_PASSWORD)
    section_3_cluster(kube, coderd.url)
    s3 = section_3(text)
    r = run_blocks(kube, tmp_path, "\n".join(shell_blocks(s3[s3.index("refused CODER_SESSION_TOKEN"):])),
                   coder_url=coderd.url, stdin="not-the-password\n")
    assert "no token: step 2 failed; nothing stored" in r.stderr
    assert "not-the-password" not in r.stdout + r.stderr
    assert kube.secret_data("coder", "coder-bootstrap-admin")["session-token"] == STALE_TOKEN
    assert kube.objects("job", "coder") == []


def test_section_3_password_steps_run_as_written_but_the_one_in_coderds_pod(kube, crds, tmp_path, text) -> None:
    """The force-sync and the verify run against the real API server as written; the reset in
    coderd's pod is the one block left out (it needs coderd's database)."""
    from tests.chart_helpers import RELEASE

    es_api = "/apis/external-secrets.io/v1/namespaces/coder/externalsecrets"
    section_3_cluster(kube, "http://coder.coder.svc.cluster.local")
    kube.http.delete(f"{es_api}/coder-bootstrap-admin")
    created = kube.http.post(es_api, json={
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "coder-bootstrap-admin"},
        "spec": {"secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                 "target": {"name": "coder-bootstrap-admin"},
                 "data": [{"secretKey": "password", "remoteRef": {"key": "coder-bootstrap-admin-password"}}]}})
    assert created.status_code == 201, created.text
    try:
        s3 = section_3(text)
        blocks = [b for b in shell_blocks(s3[:s3.index("refused CODER_SESSION_TOKEN")]) if IN_CODERD_POD not in b]
        assert len(blocks) == 2
        r = run_blocks(kube, tmp_path, "\n".join(blocks))
        assert r.returncode == 0, r.stdout + r.stderr
        es = kube.http.get(f"{es_api}/coder-bootstrap-admin").json()
        assert es["metadata"]["annotations"]["force-sync"].isdigit()
        assert len(jobs_from(kube, f"{RELEASE}-bootstrap-admin")) == 1
    finally:
        kube.http.delete(f"{es_api}/coder-bootstrap-admin")
