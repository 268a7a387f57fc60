"""Every job, as shipped: the image built from images/Dockerfile, run as a Pod on a real node under
the chart's own Job spec (securityContext, limits, podFailurePolicy), against the coderd fake and the
node's real API server. Started the way RUNBOOK starts them: `kubectl create job --from=cronjob/...`."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest

from tests.conftest import CANARY_CLIENT_SECRET, CANARY_PASSWORD, _report
from tests.kube.node import NODE_IP
from tests.kube.server import JOB_USER
from tests.node_env import (
    ADMIN,
    CLIENT_ID,
    apply_release,
    events,
    job_from_template,
    new_namespace,
    node_values,
    pod_exit_code,
    pod_log,
    run_from_cronjob,
    seed_secrets,
    wait_job,
)

pytestmark = pytest.mark.node


@pytest.fixture
def release(node, node_cluster, coderd, tmp_path):
    """A namespace on the node with the chart's non-hook objects, the source Secrets, a coderd
    Deployment to roll, and the coderd fake reachable from pods."""
    ip, port = node.expose(int(coderd.url.rsplit(":", 1)[1]))
    ns = new_namespace(node_cluster)
    seed_secrets(node_cluster, ns)
    node_cluster.put("deployment", ns, coderd_standin())
    objects = apply_release(node_cluster, ns, node_values(f"http://{ip}:{port}"))
    yield ns, objects
    node_cluster.delete_object("namespace", None, ns)


def coderd_standin(replicas: int = 0) -> dict:
    """The Deployment sync-external-auth rolls (named as the chart's coder.deploymentName)."""
    labels = {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": "coder"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 65534,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{"name": "coderd", "image": "localhost/pause:test", "imagePullPolicy": "Never",
                                         "envFrom": [{"secretRef": {"name": "coder-external-auth-github", "optional": True}}],
                                         "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}]}}}}


ORDER = ("sync-external-auth", "bootstrap-admin", "republish-templates", "doctor", "recover", "reap")


def test_every_job_runs_to_completion_as_a_pod_from_the_image(node, node_cluster, coderd, release, tmp_path):
    ns, _ = release
    runs = {}
    for job in ORDER:
        run = runs[job] = run_from_cronjob(node_cluster, ns, f"coder-jobs-{job}", tmp_path)
        assert (run.condition, run.exit_codes) == ("Complete", [0]), f"{job}: {run.reason}\n{run.logs[-1][-3000:]}"
        for log in run.logs:
            assert CANARY_PASSWORD not in log and CANARY_CLIENT_SECRET not in log
    # What the jobs were for: the Secret coderd reads, the first user, both templates.
    assert node_cluster.secret_data(ns, "coder-external-auth-github")["CODER_EXTERNAL_AUTH_0_CLIENT_SECRET"] == CANARY_CLIENT_SECRET
    assert "admin" in {u["username"] for u in coderd.users.values()}
    assert sorted(t["name"] for t in coderd.templates.values()) == ["ameide-dev", "ameide-gitops"]
    for job, run in runs.items():
        to_start, to_exit = run.timings()[0]
        _report(f"node-job-{job}", f"node pod {job}: created -> started {to_start:.0f} s, started -> exit {to_exit:.0f} s")


def test_sync_external_auth_uses_the_service_account_the_kubelet_mounts(node, node_cluster, release, tmp_path):
    """In-cluster config: the token the kubelet projects, KUBERNETES_SERVICE_HOST the kubelet sets
    (10.96.0.1, which kube-proxy routes to the API server)."""
    ns, _ = release
    run = run_from_cronjob(node_cluster, ns, "coder-jobs-sync-external-auth", tmp_path)
    assert run.exit_codes == [0]
    users = _job_users(node_cluster, ns)
    assert users == {f"system:serviceaccount:{ns}:coder-jobs-sync-external-auth"}, users
    assert JOB_USER not in users
    # A figure, not an assertion: how long the job takes, at the chart's CPU limit, to its first request.
    started = run.pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"]
    first = min(e["requestReceivedTimestamp"] for e in node_cluster.server.audit()
                if e["user"]["username"] == f"system:serviceaccount:{ns}:coder-jobs-sync-external-auth")
    seconds = (datetime.fromisoformat(first.replace("Z", "+00:00"))
               - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds()
    _report("node-first-request", f"node pod sync-external-auth: container started -> first Kubernetes request "
                                  f"{seconds:.1f} s at the chart's 500m CPU limit (startedAt has 1 s resolution)")


def _job_users(cluster, ns: str) -> set[str]:
    """Who read or wrote the source and target Secrets in `ns` (the tests read them as admin)."""
    return {e["user"]["username"] for e in cluster.server.audit()
            if (e.get("objectRef") or {}).get("namespace") == ns
            and (e.get("objectRef") or {}).get("resource") in ("secrets", "deployments")
            and e["user"]["username"].startswith("system:serviceaccount:")}


def test_a_job_that_exits_2_fails_its_job_at_once_with_one_pod(node, node_cluster, release):
    ns, objects = release
    job = job_from_template(objects, "coder-jobs-reap", "reap-bad-input", env={"REAP_IDLE_AFTER": "1m"})
    node_cluster.create("job", ns, job)
    run = wait_job(node_cluster, ns, "reap-bad-input")
    assert (run.condition, run.reason, run.exit_codes) == ("Failed", "PodFailurePolicy", [2])
    assert job["spec"]["backoffLimit"] >= 1, "the chart would have retried this exit code otherwise"
    assert "REAP_IDLE_AFTER" in run.logs[0]


def test_a_job_that_exits_1_is_retried_up_to_the_backoff_limit(node, node_cluster, release):
    ns, objects = release
    # Nothing listens on port 1 of the node: coderd "down" past a short readiness deadline.
    job = job_from_template(objects, "coder-jobs-bootstrap-admin", "bootstrap-down", backoffLimit=1,
                            env={"CODER_URL": f"http://{NODE_IP}:1", "CODER_READY_TIMEOUT": "3"})
    node_cluster.create("job", ns, job)
    run = wait_job(node_cluster, ns, "bootstrap-down")
    assert (run.condition, run.reason, run.exit_codes) == ("Failed", "BackoffLimitExceeded", [1, 1])
    assert all("connection refused" in log for log in run.logs), run.logs[0][-2000:]


def test_the_root_filesystem_is_read_only_and_only_the_mounted_volumes_take_writes(node, node_cluster, release):
    """The chart's securityContext on a real runc container: writing to the image fails with EROFS,
    /tmp (the chart's emptyDir) takes it, and the process is uid 10001 with no capabilities."""
    ns, objects = release
    probe = (
        "import os\n"
        "for path in ('/opt/venv/probe', '/probe', '/etc/probe', '/tmp/probe'):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print(path, 'written')\n"
        "    except OSError as e:\n"
        "        print(path, e.strerror)\n"
        "print('uid', os.getuid(), 'gid', os.getgid())\n"
        "print([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs', 'Seccomp:'))])\n")
    job = job_from_template(objects, "coder-jobs-reap", "root-probe")
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["command"], container["args"] = ["python", "-c", probe], []
    node_cluster.create("job", ns, job)
    run = wait_job(node_cluster, ns, "root-probe")
    log = run.logs[0]
    assert run.exit_codes == [0], log
    for path in ("/opt/venv/probe", "/probe", "/etc/probe"):
        assert f"{path} Read-only file system" in log, log
    assert "/tmp/probe written" in log
    assert "uid 10001 gid 10001" in log
    assert "CapEff:\\t0000000000000000" in log and "NoNewPrivs:\\t1" in log and "Seccomp:\\t2" in log, log


def test_the_pods_run_under_the_charts_limits(node, node_cluster, release, tmp_path):
    ns, _ = release
    run = run_from_cronjob(node_cluster, ns, "coder-jobs-doctor", tmp_path)
    pod = run.pods[0]
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["cpu"] == "500m" and resources["limits"]["memory"] == "256Mi"
    assert pod["status"]["qosClass"] == "Burstable"
    assert pod_exit_code(pod) in (0, 1)  # drift on a fresh coderd is doctor's finding, not a failure
    assert "summary" in events(run.logs[0]) or pod_log(node_cluster, ns, pod["metadata"]["name"])


# ---------------------------------------------------------------- a recreated cluster's first sync


def test_the_presync_job_waits_for_source_secrets_delivered_after_it_started(node, node_cluster, coderd):
    """External Secrets delivers the GitHub OAuth Secrets only after the PreSync Job is running."""
    ip, port = node.expose(int(coderd.url.rsplit(":", 1)[1]))
    ns = new_namespace(node_cluster)
    node_cluster.put("deployment", ns, coderd_standin())
    objects = apply_release(node_cluster, ns, node_values(f"http://{ip}:{port}"))
    node_cluster.create("job", ns, job_from_template(objects, "coder-jobs-sync-external-auth", "first-sync"))
    deadline = time.monotonic() + 300
    while True:  # a hang guard: until the running job says what it waits for
        pods = node_cluster.objects("pod", ns, label_selector="job-name=first-sync")
        log = pod_log(node_cluster, ns, pods[0]["metadata"]["name"]) if pods else ""
        if "waiting for the source Secrets" in log or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "waiting for the source Secrets" in log, log
    seed_secrets(node_cluster, ns)
    run = wait_job(node_cluster, ns, "first-sync")
    assert (run.condition, run.exit_codes) == ("Complete", [0]), run.logs[-1][-3000:]
    assert node_cluster.secret_data(ns, "coder-external-auth-github")["CODER_EXTERNAL_AUTH_0_CLIENT_ID"] == CLIENT_ID
    node_cluster.delete_object("namespace", None, ns)


def test_a_malformed_source_secret_still_fails_the_presync_job_at_once(node, node_cluster, release):
    ns, objects = release
    node_cluster.put("secret", ns, {"metadata": {"name": "coder-github-oauth-client-secret"}, "stringData": {"value": "\n"}})
    node_cluster.create("job", ns, job_from_template(objects, "coder-jobs-sync-external-auth", "malformed"))
    run = wait_job(node_cluster, ns, "malformed")
    assert (run.condition, run.reason, run.exit_codes) == ("Failed", "PodFailurePolicy", [2])
    assert "coder-github-oauth-client-secret: key `value` is empty" in run.logs[0]


# ---------------------------------------------------------------- CronJobs


def test_the_cronjobs_fire_and_forbid_holds_while_a_run_is_still_going(node, node_cluster, coderd):
    """The reaper fires at the next minute and its Job completes; the reconcile CronJob's first run
    is kept busy (coderd unreachable, a long readiness wait), and at the next minute the controller
    skips the run instead of starting a second one (concurrencyPolicy: Forbid)."""
    ip, port = node.expose(int(coderd.url.rsplit(":", 1)[1]))
    httpx.post(f"{coderd.url}/api/v2/users/first", json={**ADMIN, "password": CANARY_PASSWORD, "trial": False}).raise_for_status()
    ns = new_namespace(node_cluster)
    seed_secrets(node_cluster, ns)
    every_minute = {"schedule": "* * * * *"}
    apply_release(node_cluster, ns, node_values(f"http://{ip}:{port}", reap=every_minute,
                                                 recover={"reconcile": every_minute},
                                                 coder={"readyTimeoutSeconds": 600}))
    reconcile = node_cluster.get_object("cronjob", ns, "coder-jobs-reconcile")
    container = reconcile["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container["env"] if e["name"] != "CODER_URL"] + [
        {"name": "CODER_URL", "value": f"http://{NODE_IP}:1"}]  # nothing listens there
    node_cluster.put("cronjob", ns, reconcile)

    reaper_job = wait_for(lambda: owned_jobs(node_cluster, ns, "coder-jobs-reaper"), "the reaper CronJob to fire")[0]
    run = wait_job(node_cluster, ns, reaper_job["metadata"]["name"])
    assert (run.condition, run.exit_codes) == ("Complete", [0]), run.logs[-1][-3000:]

    wait_for(lambda: [e for e in node_cluster.objects("event", ns) if e["reason"] == "JobAlreadyActive"
                      and e["involvedObject"]["name"] == "coder-jobs-reconcile"], "the controller to skip a run")
    # Never two at once. (A run may already have completed: if a minute passed before the CronJob
    # was pointed at the dead URL, that first run found coderd and finished.)
    active = [j for j in owned_jobs(node_cluster, ns, "coder-jobs-reconcile") if j["status"].get("active")]
    assert len(active) == 1, [j["status"] for j in owned_jobs(node_cluster, ns, "coder-jobs-reconcile")]
    node_cluster.delete_object("namespace", None, ns)


def owned_jobs(cluster, ns: str, cronjob: str) -> list[dict]:
    return [j for j in cluster.objects("job", ns)
            if any(o["kind"] == "CronJob" and o["name"] == cronjob for o in j["metadata"].get("ownerReferences", []))]


def wait_for(found, what: str, deadline_s: float = 240):
    deadline = time.monotonic() + deadline_s  # a hang guard: a schedule fires within a minute
    while not (result := found()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(1)
    return result
