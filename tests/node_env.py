"""What the node tests share: the chart rendered for a namespace on the node, applied; Jobs run
the way people run them (kubectl create job --from=cronjob/...), waited for, and read back."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chart_helpers import deep_merge, env_values, rendered
from tests.conftest import CANARY_CLIENT_SECRET, CANARY_PASSWORD, NODE_IMAGE
from tests.kube.cluster import RESTRICTED, Cluster
from tests.kube.server import BIN

Obj = dict[str, Any]
# A hang guard, not a timing assertion: a Job that has not finished by then will not. Below
# pytest's 300 s per test, so a hung Job is reported by name with its status.
JOB_DEADLINE_S = 240
ADMIN = {"username": "admin", "email": "admin@example.com"}
CLIENT_ID = "Iv1.node-test-client"


def node_values(coder_url: str, **overrides: Any) -> Obj:
    """The local environment's values, enabled, running the image built here."""
    repository, _, tag = NODE_IMAGE.rpartition(":")
    base = deep_merge(env_values("local", enable=True), {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "coder": {"url": coder_url, "readyTimeoutSeconds": 60, "admin": ADMIN},
        "workspaces": {"enabled": False},
        "logFormat": "json",
    })
    return deep_merge(base, overrides)


def new_namespace(cluster: Cluster, prefix: str = "t") -> str:
    """A fresh namespace enforcing the restricted Pod Security level, as the chart's docs ask."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.ensure_namespace(name, RESTRICTED)
    return name


def seed_secrets(cluster: Cluster, ns: str, client_secret: str = CANARY_CLIENT_SECRET) -> None:
    """What ESO delivers in a real install: the admin's password and the GitHub OAuth pair."""
    cluster.put("secret", ns, {"metadata": {"name": "coder-bootstrap-admin"}, "stringData": {"password": CANARY_PASSWORD}})
    cluster.put("secret", ns, {"metadata": {"name": "coder-github-oauth-client-id"}, "stringData": {"value": CLIENT_ID}})
    cluster.put("secret", ns, {"metadata": {"name": "coder-github-oauth-client-secret"},
                               "stringData": {"value": client_secret}})


def apply_release(cluster: Cluster, ns: str, values: Obj) -> list[Obj]:
    """The chart's objects for `ns` as an install leaves them, created on the node: every object
    but the hook Jobs (the hooks' ServiceAccount and Role stay after an install). Objects for other
    namespaces are left out: these tests give each release its own."""
    objects = [o for o in rendered(values, namespace=ns).exact()
               if o["metadata"].get("namespace", ns) == ns and o["kind"] != "Namespace"
               and not (o["kind"] == "Job" and "helm.sh/hook" in (o["metadata"].get("annotations") or {}))]
    for o in sorted(objects, key=lambda o: o["kind"] in ("Job", "CronJob")):  # RBAC and config first
        cluster.put(o["kind"], ns, o)
    return objects


def kubectl(cluster: Cluster, ns: str, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    config = cluster.kubeconfig(tmp / f"kubeconfig-{ns}", namespace=ns, direct=True)
    return subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={config}", *args],
                          capture_output=True, text=True, timeout=120)


@dataclass
class JobRun:
    """A finished Job: its conditions, its Pods (oldest first) and their exit codes and logs."""

    job: Obj
    pods: list[Obj]
    logs: list[str]

    @property
    def condition(self) -> str:
        done = [c for c in self.job["status"].get("conditions", [])
                if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        return done[0]["type"] if done else "Running"

    @property
    def reason(self) -> str:
        return next((c.get("reason", "") for c in self.job["status"].get("conditions", [])
                     if c["type"] == "Failed"), "")

    @property
    def exit_codes(self) -> list[int]:
        return [pod_exit_code(p) for p in self.pods]

    def timings(self) -> list[tuple[float, float]]:
        """(Pod created -> container started, container started -> exit) in seconds, per Pod."""
        out = []
        for p in self.pods:
            term = p["status"]["containerStatuses"][0]["state"]["terminated"]
            created, started, finished = (_ts(p["metadata"]["creationTimestamp"]), _ts(term["startedAt"]),
                                          _ts(term["finishedAt"]))
            out.append((started - created, finished - started))
        return out


def _ts(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def pod_exit_code(pod: Obj) -> int:
    statuses = pod["status"].get("containerStatuses") or []
    term = statuses[0]["state"].get("terminated") if statuses else None
    return term["exitCode"] if term else -1


def wait_job(cluster: Cluster, ns: str, name: str, deadline_s: float = JOB_DEADLINE_S) -> JobRun:
    deadline = time.monotonic() + deadline_s
    while True:
        job = cluster.get_object("job", ns, name)
        if job is not None:
            run = JobRun(job, [], [])
            if run.condition != "Running":
                pods = sorted(cluster.objects("pod", ns, label_selector=f"job-name={name}"),
                              key=lambda p: p["metadata"]["creationTimestamp"])
                # The Job is finished when its pods are: read them once each has its exit code.
                if all(pod_exit_code(p) >= 0 for p in pods):
                    return JobRun(job, pods, [pod_log(cluster, ns, p["metadata"]["name"]) for p in pods])
        if time.monotonic() > deadline:
            raise AssertionError(f"job {ns}/{name} did not finish within {deadline_s} s: {job and job.get('status')}")
        time.sleep(0.5)


def pod_log(cluster: Cluster, ns: str, pod: str) -> str:
    r = cluster.http.get(f"/api/v1/namespaces/{ns}/pods/{pod}/log")
    return r.text if r.status_code == 200 else f"<no log: HTTP {r.status_code}>"


def run_from_cronjob(cluster: Cluster, ns: str, cronjob: str, tmp: Path) -> JobRun:
    """RUNBOOK's manual run: `kubectl create job --from=cronjob/<name> <name>-manual-<n>`."""
    name = f"{cronjob}-manual-{uuid.uuid4().hex[:6]}"
    r = kubectl(cluster, ns, "create", "job", f"--from=cronjob/{cronjob}", name, tmp=tmp)
    assert r.returncode == 0, r.stderr
    return wait_job(cluster, ns, name)


def job_from_template(objects: list[Obj], cronjob: str, name: str, env: dict[str, str] | None = None,
                      **spec: Any) -> Obj:
    """A Job with the chart's own Job spec (from the CronJob's jobTemplate), with `env` added to
    the container and `spec` fields replaced."""
    cj = next(o for o in objects if o["kind"] == "CronJob" and o["metadata"]["name"] == cronjob)
    job_spec = deep_merge(cj["spec"]["jobTemplate"]["spec"], spec)
    container = job_spec["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container.get("env", []) if e["name"] not in (env or {})] + [
        {"name": k, "value": v} for k, v in (env or {}).items()]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": job_spec}


def events(log: str) -> list[str]:
    """The `event` field of each JSON log line (for readable assertions)."""
    return re.findall(r'"event": ?"([^"]*)"', log)
