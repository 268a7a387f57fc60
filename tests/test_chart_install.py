"""The chart installed on a real kube-apiserver at the floor of its kubeVersion, as Argo CD does.

Every environment's render (with its switches on) is applied with the real kubectl, into
namespaces that enforce the restricted Pod Security level: server-side (Argo CD's
`ServerSideApply=true`) and client-side followed by server-side (an app switched over).
Nothing may be rejected, warned about, conflict, or change on a second apply.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart_helpers import DIGEST, NAMESPACE, env_values, pod_specs, render_raw
from tests.kube.cluster import RESTRICTED
from tests.kube.server import BIN, KUBE_VERSION

CRDS = Path(__file__).resolve().parent.parent.parent / "shared" / "crds"
ENVIRONMENTS = ("local", "dev", "staging", "production")
FIELD_MANAGER = "argocd-controller"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def admin_kubeconfig(kube_cluster, tmp_path_factory) -> str:
    return kube_cluster.kubeconfig(tmp_path_factory.mktemp("kc") / "admin", namespace=NAMESPACE, direct=True)


@pytest.fixture(scope="module")
def crds(kube_cluster, admin_kubeconfig):
    """The CRDs the chart's objects need (External Secrets, Cilium), installed first."""
    if not CRDS.is_dir():
        pytest.skip(f"CRDs not found: looked for {CRDS}")
    files = sorted(CRDS.glob("*.yaml"))
    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                *[f"--filename={f}" for f in files])
    assert r.returncode == 0, r.stderr
    kube_cluster.wait_established(files)


def manifest(env: str) -> tuple[str, list[dict]]:
    """The render as one YAML stream, Namespaces first (as Argo CD orders them). Parsed from the
    raw render: `render()` adds empty annotations for the offline tests, which a real server drops."""
    raw = render_raw(env_values(env, enable=True))
    objects = [doc for path, text in sorted(raw.items()) if not path.endswith("NOTES.txt")
               for doc in yaml.safe_load_all(text) if doc]
    objects.sort(key=lambda o: o["kind"] != "Namespace")
    return yaml.safe_dump_all(objects), objects


def prepare_namespaces(kube, objects: list[dict]) -> None:
    """The release namespace exists (Argo CD's CreateNamespace, labelled restricted); the ones the
    chart creates itself must carry the restricted label themselves."""
    kube.drop_namespaces()  # a fresh cluster: nothing left from another environment's install
    kube.ensure_namespace(NAMESPACE, RESTRICTED)
    for ns in {o["metadata"].get("namespace") for o in objects} - {None, NAMESPACE}:
        if not any(o["kind"] == "Namespace" and o["metadata"]["name"] == ns for o in objects):
            kube.ensure_namespace(ns, RESTRICTED)


def server_copy(kube, o: dict) -> dict | None:
    """The object as the server holds it, for any kind the chart renders (built-in or CRD)."""
    kind = o["kind"].lower()
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    prefix = f"/apis/{o['apiVersion']}" if "/" in o["apiVersion"] else f"/api/{o['apiVersion']}"
    where = "" if o["kind"] == "Namespace" else f"/namespaces/{o['metadata'].get('namespace', NAMESPACE)}"
    r = kube.http.get(f"{prefix}{where}/{plural}/{o['metadata']['name']}")
    return None if r.status_code == 404 else r.json()


def state(kube, objects: list[dict]) -> dict[str, str]:
    """kind/namespace/name -> resourceVersion, as the server holds them."""
    out = {}
    for o in objects:
        got = server_copy(kube, o)
        assert got is not None, f"{o['kind']}/{o['metadata']['name']} is not on the server"
        out[f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"] = got["metadata"]["resourceVersion"]
    return out


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning")]


def test_the_server_is_the_charts_floor_version(kube_cluster) -> None:
    """The chart claims `>= floor`; the server every install test uses runs exactly that minor."""
    chart = yaml.safe_load((Path(__file__).resolve().parent.parent / "chart" / "Chart.yaml").read_text())
    floor = re.match(r">=\s*(\d+)\.(\d+)", chart["kubeVersion"])
    assert floor, chart["kubeVersion"]
    version = kube_cluster.http.get("/version").json()
    assert version["gitVersion"] == KUBE_VERSION
    assert (version["major"], version["minor"]) == floor.groups()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_server_side_apply_installs_without_warnings_and_a_second_apply_changes_nothing(
        env, kube, crds, admin_kubeconfig) -> None:
    text, objects = manifest(env)
    prepare_namespaces(kube, objects)
    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    assert warnings(r.stderr) == []
    before = state(kube, objects)

    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text)
    assert r.returncode == 0 and warnings(r.stderr) == [], r.stderr
    after = state(kube, objects)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == [], f"a second server-side apply rewrote {changed}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_client_side_install_moves_to_server_side_apply_without_conflicts(env, kube, crds, admin_kubeconfig) -> None:
    text, objects = manifest(env)
    prepare_namespaces(kube, objects)
    r = kubectl(admin_kubeconfig, "apply", "-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    assert warnings(r.stderr) == []
    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text)
    assert r.returncode == 0, f"server-side apply after a client-side install conflicts:\n{r.stderr}"
    assert warnings(r.stderr) == []


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_job_pod_template_is_admitted_as_a_bare_pod(env, kube, crds, admin_kubeconfig) -> None:
    """Pod Security admission judges pods, not templates: a Pod made from each Job/CronJob
    template must be admitted (server dry-run runs every admission plugin)."""
    text, objects = manifest(env)
    prepare_namespaces(kube, objects)
    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    templates = [(o["metadata"]["name"], o["metadata"].get("namespace", NAMESPACE), spec)
                 for o in objects if o["kind"] in ("Job", "CronJob") for spec in pod_specs(o)]
    assert templates
    for name, ns, spec in templates:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name[:50]}-probe"}, "spec": spec}
        resp = kube.http.post(f"/api/v1/namespaces/{ns}/pods", params={"dryRun": "All"}, content=json.dumps(pod),
                              headers={"Content-Type": "application/json"})
        assert resp.status_code == 201, f"{name}: {resp.status_code} {resp.json().get('message')}"
        assert "warning" not in resp.headers, f"{name}: {resp.headers['warning']}"


# ------------------------------------------------------- every documented switch combination (issue 20)

WORKSPACES = {"off": {"enabled": False},
              "on": {"enabled": True, "networkPolicy": {"enabled": False}},
              "on+kubernetes": {"enabled": True, "networkPolicy": {"enabled": True, "provider": "kubernetes"}},
              "on+cilium": {"enabled": True, "networkPolicy": {"enabled": True, "provider": "cilium"}}}
# The API server CIDRs are a value the kubernetes provider requires (for the jobs' and the
# workspaces' policies alike), not a switch: every combination carries them.
API = {"kubernetesApi": {"cidrs": ["10.0.0.1/32"]}}
JOB_POLICIES = {"off": {"enabled": False, **API},
                "kubernetes": {"enabled": True, "provider": "kubernetes", **API},
                "cilium": {"enabled": True, "provider": "cilium", **API}}
COMBINATIONS = [(n, reap, templates) for n in JOB_POLICIES for reap in (True, False) for templates in (True, False)]


def combination(workspaces: str, policy: str, reap: bool, templates: bool) -> dict:
    """values.yaml with `enabled: true` (and the digest a release writes) plus the switches."""
    return {"enabled": True, "environment": "dev", "image": {"digest": DIGEST}, "workspaces": WORKSPACES[workspaces],
            "networkPolicy": JOB_POLICIES[policy], "reap": {"enabled": reap}, "templates": {"enabled": templates}}


@pytest.mark.parametrize("workspaces", WORKSPACES)  # four tests of 12 installs: workers share them
def test_every_switch_combination_installs_on_an_empty_cluster(workspaces, kube, crds, admin_kubeconfig) -> None:
    """workspaces.enabled (with and without its NetworkPolicy, either provider), networkPolicy.*,
    reap.enabled and templates.enabled: each of the 4 x 12 renders applies to a cluster that has
    nothing but the release namespace (Argo CD's CreateNamespace) and the CRDs."""
    failures = []
    for combo in ((workspaces, *rest) for rest in COMBINATIONS):
        raw = render_raw(combination(*combo))
        objects = [doc for path, text in sorted(raw.items()) if not path.endswith("NOTES.txt")
                   for doc in yaml.safe_load_all(text) if doc]
        objects.sort(key=lambda o: o["kind"] != "Namespace")
        kube.drop_namespaces()
        kube.ensure_namespace(NAMESPACE, RESTRICTED)
        r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                    stdin=yaml.safe_dump_all(objects))
        if r.returncode != 0 or warnings(r.stderr):
            failures.append(f"workspaces={combo[0]} networkPolicy={combo[1]} reap={combo[2]} templates={combo[3]}: "
                            f"{r.stderr.strip()}")
    assert not failures, "\n".join(failures)
