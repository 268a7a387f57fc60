"""The three ways the jobs are used, on the real node with the image and the chart as shipped:
the dev environment installed by the real helm CLI (hooks in Helm's order), upgraded with nothing
changed (hooks again, zero writes), upgraded with new external-auth content (coderd rolls), and
RUNBOOK section 1 run verbatim after a database reset. One install in namespace `coder`, because
the RUNBOOK's commands name it; the tests below run in file order on it."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from fakes.coderd import FakeCoderd
from tests.chart_helpers import CHART_DIR, SHARED_CRDS
from tests.conftest import CANARY_CLIENT_SECRET, NODE_IMAGE, _report, coder_writes
from tests.kube.cluster import RESTRICTED
from tests.kube.server import BIN, JOB_USER
from tests.node_env import ADMIN, CLIENT_ID, pod_log, seed_secrets, wait_job

pytestmark = pytest.mark.node

NS = "coder"
RUNBOOK = Path(__file__).resolve().parent.parent / "RUNBOOK.md"
HOOKS = ("coder-jobs-sync-external-auth", "coder-jobs-bootstrap-admin", "coder-jobs-republish-templates")


@pytest.fixture(scope="module")
def fake():
    coderd = FakeCoderd(external_auth_providers=("github",)).start()
    yield coderd
    coderd.stop()


@pytest.fixture(scope="module")
def site(node, node_cluster, fake, tmp_path_factory):
    """What is there before the first sync: the CRDs, the release namespace, the Secrets the
    platform's pipeline delivers, and coderd (a stand-in that prints the client id it was started with)."""
    tmp = tmp_path_factory.mktemp("site")
    kubeconfig = node_cluster.kubeconfig(tmp / "kubeconfig", namespace=NS, direct=True)
    crds = sorted(SHARED_CRDS.glob("*.yaml"))
    run([str(BIN / "kubectl"), "apply", "--server-side", *[f"--filename={f}" for f in crds]], kubeconfig)
    node_cluster.wait_established(crds)
    node_cluster.ensure_namespace(NS, RESTRICTED)
    seed_secrets(node_cluster, NS)
    node_cluster.put("deployment", NS, coderd_standin())
    ip, port = node.expose(int(fake.url.rsplit(":", 1)[1]))
    repository = NODE_IMAGE.rsplit(":", 1)[0]
    overrides = {"image": {"repository": repository, "digest": node.image_digest, "pullPolicy": "Never"},
                 "coder": {"url": f"http://{ip}:{port}", "admin": ADMIN}, "logFormat": "json"}
    values = tmp / "node-values.yaml"
    values.write_text(yaml.safe_dump(overrides))
    return {"kubeconfig": kubeconfig, "values": values, "tmp": tmp}


def run(cmd: list[str], kubeconfig: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, env={"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": kubeconfig, "HOME": str(Path(kubeconfig).parent)},
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def helm(site: dict, verb: str) -> float:
    """`helm install|upgrade` of the dev environment with the node's overrides; its wall time."""
    started = time.monotonic()
    # --timeout covers the hooks' own deadlines (the default 5m does not: chart/README.md).
    run([str(BIN / "helm"), verb, "coder-jobs", str(CHART_DIR), "--namespace", NS,
         "--values", str(CHART_DIR / "values-dev.yaml"), "--values", str(site["values"]),
         "--wait", "--timeout", "45m"], site["kubeconfig"])
    return time.monotonic() - started


def coderd_standin() -> dict:
    """coderd as the chart's docs ask coder's own chart to run it: envFrom the Secret
    sync-external-auth writes. It prints the client id it started with, then waits."""
    labels = {"app.kubernetes.io/name": "coder", "app.kubernetes.io/instance": "coder"}
    script = "import os, time; print('client id:', os.environ.get('CODER_EXTERNAL_AUTH_0_CLIENT_ID'), flush=True); time.sleep(86400)"
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coder"},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "coderd", "image": NODE_IMAGE, "imagePullPolicy": "Never",
                                         "command": ["python", "-c", script],
                                         "envFrom": [{"secretRef": {"name": "coder-external-auth-github", "optional": True}}],
                                         "securityContext": {"allowPrivilegeEscalation": False,
                                                             "capabilities": {"drop": ["ALL"]}}}]}}}}


def creates(cluster, since_mark: int) -> list[tuple[str, str, datetime]]:
    """(resource, name, when) of what helm created in the release namespace, in the server's
    order, leaving out helm's own release records."""
    return [(e["objectRef"]["resource"], e["objectRef"].get("name", ""), when(e["requestReceivedTimestamp"]))
            for e in cluster.server.audit(since_mark)
            if e["verb"] == "create" and e["user"]["username"] == JOB_USER and e["responseStatus"]["code"] < 300
            and e["objectRef"].get("namespace") == NS and not e["objectRef"].get("subresource")
            and not e["objectRef"].get("name", "").startswith("sh.helm.release.")]


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def replica_sets(cluster) -> list[dict]:
    return [rs for rs in cluster.http.get(f"/apis/apps/v1/namespaces/{NS}/replicasets").json()["items"]
            if rs["metadata"]["name"].startswith("coder-") and not rs["metadata"]["name"].startswith("coder-jobs")]


def test_helm_install_runs_the_hooks_in_helms_order_against_coderd(node, node_cluster, fake, site):
    mark = node_cluster.server.audit_mark()
    seconds = helm(site, "install")
    order = creates(node_cluster, mark)
    jobs = {name: node_cluster.get_object("job", NS, name) for name in HOOKS}
    position = {(r, n): i for i, (r, n, _) in enumerate(order)}
    hook_objects = {("jobs", h) for h in HOOKS} | {(r, HOOKS[0]) for r in ("serviceaccounts", "roles", "rolebindings")}
    regular = [(r, n, t) for r, n, t in order if (r, n) not in hook_objects and r != "externalsecrets"]
    assert regular, order
    # pre-install: the sync Job is created, and has completed, before any regular object is created...
    assert position[("jobs", HOOKS[0])] < min(position[(r, n)] for r, n, _ in regular), order
    assert when(jobs[HOOKS[0]]["status"]["completionTime"]) <= regular[0][2].replace(microsecond=0)
    # ...post-install: bootstrap-admin (weight 1) after them all, republish-templates (2) once it completed.
    assert position[("jobs", HOOKS[1])] > max(position[(r, n)] for r, n, _ in regular), order
    assert position[("jobs", HOOKS[2])] > position[("jobs", HOOKS[1])]
    assert when(jobs[HOOKS[2]]["metadata"]["creationTimestamp"]) >= when(jobs[HOOKS[1]]["status"]["completionTime"])
    for name, job in jobs.items():
        assert job["status"].get("succeeded") == 1, name
    # What they were for.
    assert "admin" in {u["username"] for u in fake.users.values()}
    assert sorted(t["name"] for t in fake.templates.values()) == ["ameide-dev", "ameide-gitops"]
    assert node_cluster.secret_data(NS, "coder-external-auth-github")["CODER_EXTERNAL_AUTH_0_CLIENT_SECRET"] == CANARY_CLIENT_SECRET
    _report("node-helm-install", f"node helm install of the dev render: {seconds:.0f} s to all hooks done")
    for name in HOOKS:
        run_ = wait_job(node_cluster, NS, name)
        to_start, to_exit = run_.timings()[-1]
        _report(f"node-hook-{name}", f"node hook {name}: pod created -> started {to_start:.0f} s, started -> exit {to_exit:.0f} s")


def test_helm_upgrade_with_nothing_changed_reruns_every_hook_and_writes_nothing(node_cluster, fake, site):
    before = {name: node_cluster.get_object("job", NS, name)["metadata"]["uid"] for name in HOOKS}
    target = node_cluster.get_object("secret", NS, "coder-external-auth-github")["metadata"]["resourceVersion"]
    replicas = len(replica_sets(node_cluster))
    fake.clear_log()
    helm(site, "upgrade")
    for name in HOOKS:  # before-hook-creation: each hook Job is a new one, and it completed
        job = node_cluster.get_object("job", NS, name)
        assert job["metadata"]["uid"] != before[name] and job["status"].get("succeeded") == 1, name
    assert coder_writes(fake) == []
    assert node_cluster.get_object("secret", NS, "coder-external-auth-github")["metadata"]["resourceVersion"] == target
    assert len(replica_sets(node_cluster)) == replicas, "coderd rolled although nothing changed"


def test_coderd_rolls_when_the_external_auth_content_changes_and_sees_the_new_value(node_cluster, site):
    replicas = {rs["metadata"]["name"] for rs in replica_sets(node_cluster)}
    node_cluster.put("secret", NS, {"metadata": {"name": "coder-github-oauth-client-id"},
                                    "stringData": {"value": CLIENT_ID + "-rotated"}})
    helm(site, "upgrade")
    new = [rs for rs in replica_sets(node_cluster) if rs["metadata"]["name"] not in replicas]
    assert len(new) == 1, "one new ReplicaSet for the new external-auth content"
    pod_hash = new[0]["metadata"]["labels"]["pod-template-hash"]
    deadline = time.monotonic() + 300
    while True:  # a hang guard: the new pod prints what it started with
        pods = node_cluster.objects("pod", NS, label_selector=f"pod-template-hash={pod_hash}")
        log = pod_log(node_cluster, NS, pods[0]["metadata"]["name"]) if pods else ""
        if "client id:" in log or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert f"client id: {CLIENT_ID}-rotated" in log


def runbook_block(heading: str, after: str) -> str:
    """The first ```sh block after `after` in the RUNBOOK section `heading`: the commands as written."""
    text = RUNBOOK.read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return re.search(r"```sh\n(.*?)```", section[section.index(after):], re.S).group(1)


def runbook(site: dict, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                          env={"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": site["kubeconfig"], "HOME": str(site["tmp"])},
                          capture_output=True, text=True, timeout=2400)


def run_and_follow(site: dict, create: str) -> subprocess.CompletedProcess:
    """A RUNBOOK `kubectl create job` line, then section 0's follow() on the name it printed."""
    created = runbook(site, create)
    assert created.returncode == 0, created.stderr
    name = re.search(r"job\.batch/(\S+) created", created.stdout).group(1)
    follow = runbook_block("## 0. Orientation", "Follow a job you started").replace("<name>", name)
    return runbook(site, follow)


def test_runbook_section_1_heals_a_database_reset_as_written(node_cluster, fake, site):
    fake.reset_database()
    assert "admin" not in {u["username"] for u in fake.users.values()}
    heal = run_and_follow(site, runbook_block("## 1. Database reset", "Heal in one step"))
    assert heal.returncode == 0, heal.stderr[-3000:]
    assert "admin" in {u["username"] for u in fake.users.values()}
    assert sorted(t["name"] for t in fake.templates.values()) == ["ameide-dev", "ameide-gitops"]
    # Step 3: doctor, as section 0 starts it, must exit 0.
    check = run_and_follow(site, runbook_block("## 0. Orientation", "Read-only health report"))
    assert check.returncode == 0, check.stderr[-3000:]


def test_runbook_section_4_rotates_the_client_secret_as_written(node_cluster, site):
    """Section 4's block, pasted after section 0's follow(), on the installed release: the real Job
    runs from the image and coderd really rolls. External Secrets cannot run here, so a thread does
    its part only: on the forced refresh, write the vault's new value into the source Secret, then
    record the sync in the ExternalSecret's status (Secret first, status after, as ESO does)."""
    api = f"/apis/external-secrets.io/v1/namespaces/{NS}/externalsecrets"
    source = "coder-github-oauth-client-secret"
    es = node_cluster.http.post(api, json={
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "platform-github-oauth"},
        "spec": {"secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"}, "target": {"name": source},
                 "data": [{"secretKey": "value", "remoteRef": {"key": source}}]}})
    assert es.status_code == 201, es.text
    obj = es.json()
    obj["status"] = {"syncedResourceVersion": "1-old", "conditions": [
        {"type": "Ready", "status": "True", "reason": "SecretSynced", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
    node_cluster.http.put(f"{api}/platform-github-oauth/status", json=obj).raise_for_status()
    rotated = CANARY_CLIENT_SECRET + "-rotated"
    replicas = {rs["metadata"]["name"] for rs in replica_sets(node_cluster)}

    stop = threading.Event()

    def external_secrets() -> None:
        while not stop.wait(0.5):
            current = node_cluster.http.get(f"{api}/platform-github-oauth").json()
            if "force-sync" in current["metadata"].get("annotations", {}) and current["status"]["syncedResourceVersion"] == "1-old":
                node_cluster.put("secret", NS, {"metadata": {"name": source}, "stringData": {"value": rotated}})
                current["status"]["syncedResourceVersion"] = "2-new"
                node_cluster.http.put(f"{api}/platform-github-oauth/status", json=current).raise_for_status()
                return

    thread = threading.Thread(target=external_secrets, daemon=True)
    thread.start()
    try:
        follow = runbook_block("## 0. Orientation", "Follow a job you started").replace("follow <name>\n", "")
        section_4 = [b for b in re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text().split("## 4.")[1].split("\n## 5.")[0], re.S)
                     if "force-sync" in b]
        r = runbook(site, follow + section_4[0])
    finally:
        stop.set()
        thread.join()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert node_cluster.secret_data(NS, "coder-external-auth-github")["CODER_EXTERNAL_AUTH_0_CLIENT_SECRET"] == rotated
    assert len([rs for rs in replica_sets(node_cluster) if rs["metadata"]["name"] not in replicas]) == 1
    assert "successfully rolled out" in r.stdout and rotated not in r.stdout + r.stderr
