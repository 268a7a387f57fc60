"""The Argo CD install path of chart/README.md, held to what can be proven without Argo CD (issue 19
item 5): the AppProject and Application blocks, read verbatim from the README, are accepted by the
real kube-apiserver with Argo CD's own CRDs; the Application's Helm values render with the real
Helm engine and install; the AppProject permits exactly what the chart renders; the plain Helm
timeout covers every hook's deadline; RUNBOOK section 4 cannot run the job on a stale Secret."""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from tests.chart_helpers import (
    CHART_DIR,
    DIGEST,
    ENVIRONMENTS,
    NAMESPACE,
    RELEASE,
    ROOT,
    SHARED_CRDS,
    deep_merge,
    env_values,
    job_spec,
    load_values,
    render_raw,
    rendered,
)
from tests.kube.server import BIN
from tests.test_chart_install import FIELD_MANAGER, admin_kubeconfig, crds, kubectl, prepare_namespaces, warnings

__all__ = ["admin_kubeconfig", "crds"]  # fixtures shared with test_chart_install

CHART_README = (CHART_DIR / "README.md").read_text()
ARGOCD_CRDS = SHARED_CRDS / "argocd"
ARGOCD_NAMESPACE = "argocd"


def readme_block(kind: str) -> str:
    """The chart README's ```yaml block holding the one object of `kind`, as text."""
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", CHART_README, re.S)
              if re.search(rf"^kind: {kind}$", b, re.M)]
    assert len(blocks) == 1, f"chart/README.md has {len(blocks)} yaml blocks of kind {kind}"
    return blocks[0]


PROJECT = yaml.safe_load(readme_block("AppProject"))
APPLICATION = yaml.safe_load(readme_block("Application"))
CODERD_VALUES = yaml.safe_load(next(b for b in re.findall(r"```yaml\n(.*?)```", CHART_README, re.S)
                                    if b.startswith("coder:\n")))


# ------------------------------------------------------------------------ what the Application renders


def application_values(app: dict, revision: str = "0123456") -> dict:
    """The values Argo CD hands Helm for `app`, lowest precedence first: the value files, `values`,
    `valuesObject`, then `parameters` (docs/user-guide/helm.md, "Helm Value Precedence"), with the
    build environment's `$ARGOCD_APP_REVISION_SHORT` substituted. Only the digest the release
    workflow writes into the values file is a stand-in (DIGEST)."""
    helm = app["spec"]["source"]["helm"]
    values: dict = {}
    for name in helm.get("valueFiles", []):
        values = deep_merge(values, yaml.safe_load((CHART_DIR / name).read_text()) or {})
    if not values.get("image", {}).get("digest"):
        values = deep_merge(values, {"image": {"digest": DIGEST}})
    values = deep_merge(values, yaml.safe_load(helm.get("values") or "{}") or {})
    values = deep_merge(values, helm.get("valuesObject") or {})
    for p in helm.get("parameters", []):
        value = p["value"].replace("$ARGOCD_APP_REVISION_SHORT", revision)
        assert p.get("forceString"), f"{p['name']}: without forceString an all-digit value becomes a number"
        node = values
        *parents, leaf = p["name"].split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def application_render() -> list[dict]:
    source = APPLICATION["spec"]["source"]
    raw = render_raw(application_values(APPLICATION), name=source["helm"]["releaseName"],
                     namespace=APPLICATION["spec"]["destination"]["namespace"])
    objects = [doc for path, text in sorted(raw.items()) if not path.endswith("NOTES.txt")
               for doc in yaml.safe_load_all(text) if doc]
    objects.sort(key=lambda o: o["kind"] != "Namespace")  # Argo CD applies Namespaces first
    return objects


def test_the_application_installs_this_chart_as_documented() -> None:
    spec = APPLICATION["spec"]
    assert spec["project"] == PROJECT["metadata"]["name"]
    assert spec["source"]["path"] == "chart" and spec["source"]["helm"]["releaseName"] == RELEASE
    assert spec["destination"]["namespace"] == NAMESPACE
    for name in spec["source"]["helm"]["valueFiles"]:
        assert (CHART_DIR / name).is_file(), name
    policy = spec["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert set(policy["syncOptions"]) == {"CreateNamespace=true", "ServerSideApply=true"}
    # Longer than the 5 retries of about 2.5 min an automated sync gets without it.
    assert policy["retry"]["limit"] > 5 and policy["retry"]["backoff"]["maxDuration"]


def test_the_applications_values_render_the_revision_as_a_string_even_when_it_is_all_digits() -> None:
    objects = rendered(application_values(APPLICATION, revision="1234567"), name=RELEASE, namespace=NAMESPACE)
    job = objects.get("Job", f"{RELEASE}-republish-templates")
    env = {e["name"]: e.get("value") for e in job_spec(job)["template"]["spec"]["containers"][0]["env"]}
    assert env["TEMPLATES_REVISION"].endswith("-1234567")


# ------------------------------------------------------------------------ the AppProject's permissions

CIDRS = ["10.0.0.1/32"]


def every_switch_on(env: str, provider: str) -> dict:
    """`env` enabled with everything that renders objects switched on, for one NetworkPolicy
    provider (the plain NetworkPolicy provider needs CIDRs for every destination it allows)."""
    workspace_policy: dict = {"enabled": True, "provider": provider}
    if provider == "kubernetes":
        workspace_policy.update({d: {"cidrs": CIDRS} for d in ("coderAccessUrl", "keycloak", "openai")}, extra=[])
    return deep_merge(env_values(env, enable=True), {
        "workspaces": {"enabled": True, "createNamespace": True, "codex": {"enabled": True},
                       "networkPolicy": workspace_policy},
        "networkPolicy": {"enabled": True, "provider": provider, "kubernetesApi": {"cidrs": CIDRS}},
        "externalSecrets": {"enabled": True, "secretStoreRef": {"name": "vault"},
                            "bootstrapAdmin": {"enabled": True}, "githubOAuth": {"enabled": True}},
        "reap": {"enabled": True, "rules": [{"id": "gitops", "template": "ameide-gitops", "exempt": True}]},
        "manualJobs": {"enabled": True, "dryRun": True}})


@pytest.fixture(scope="module")
def every_render() -> list[dict]:
    return [o for env in ENVIRONMENTS for provider in ("kubernetes", "cilium")
            for o in rendered(every_switch_on(env, provider)).objects] + application_render()


def group_kind(obj: dict) -> tuple[str, str]:
    return obj["apiVersion"].rpartition("/")[0], obj["kind"]


def whitelist(name: str) -> set[tuple[str, str]]:
    return {(e["group"], e["kind"]) for e in PROJECT["spec"][name]}


def test_the_project_whitelists_exactly_the_kinds_any_environment_renders(every_render) -> None:
    """Namespaced objects carry their namespace in the render; the cluster-scoped ones do not."""
    namespaced = {group_kind(o) for o in every_render if "namespace" in o["metadata"]}
    cluster = {group_kind(o) for o in every_render if "namespace" not in o["metadata"]}
    assert whitelist("namespaceResourceWhitelist") == namespaced
    # CreateNamespace=true makes the release namespace a sync task Argo CD checks like any other.
    assert whitelist("clusterResourceWhitelist") == cluster | {("", "Namespace")}


def test_the_project_permits_every_namespace_the_chart_writes_to_and_the_source(every_render) -> None:
    allowed = {(d["server"], d["namespace"]) for d in PROJECT["spec"]["destinations"]}
    server = APPLICATION["spec"]["destination"]["server"]
    used = {o["metadata"]["namespace"] for o in every_render if "namespace" in o["metadata"]}
    assert {(server, ns) for ns in used | {APPLICATION["spec"]["destination"]["namespace"]}} <= allowed
    assert APPLICATION["spec"]["source"]["repoURL"] in PROJECT["spec"]["sourceRepos"]


# ------------------------------------------------------------------------ what coderd's chart is given


def test_the_coderd_values_read_the_secret_and_grant_what_the_templates_create() -> None:
    defaults = load_values("dev") | {"syncExternalAuth": yaml.safe_load((CHART_DIR / "values.yaml").read_text())["syncExternalAuth"]}
    coder = CODERD_VALUES["coder"]
    assert {"secretRef": {"name": defaults["syncExternalAuth"]["targetSecret"]}} in coder["envFrom"]
    account = coder["serviceAccount"]
    assert account["workspacePerms"] and account["enableDeployments"]  # Deployments come from these
    [workspaces] = account["workspaceNamespaces"]
    assert workspaces["name"] == load_values("dev")["workspaces"]["namespace"]
    secrets = [r for r in workspaces["extraRules"] if "secrets" in r["resources"] and r["apiGroups"] == [""]]
    assert secrets and {"create", "update", "delete"} <= set(secrets[0]["verbs"])
    # ... and the templates create exactly Deployments and Secrets in that namespace.
    kinds = set(re.findall(r'resource "(kubernetes_[a-z0-9_]+)"',
                           "".join(p.read_text() for p in (CHART_DIR / "files" / "coder-templates").rglob("*.tf"))))
    assert kinds == {"kubernetes_deployment_v1", "kubernetes_secret_v1"}


# ------------------------------------------------------------------------ plain Helm


def hook_deadlines(values: dict) -> dict[str, int]:
    return {o["metadata"]["name"]: o["spec"]["activeDeadlineSeconds"]
            for o in rendered(values).hooks() if o["kind"] == "Job"}


def seconds(duration: str) -> int:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, duration
    h, m, s = (int(x or 0) for x in parts.groups())
    return 3600 * h + 60 * m + s


def test_every_documented_helm_install_waits_longer_than_the_longest_hook_deadline() -> None:
    """Helm 3 waits for each hook up to --timeout (default 5m); a shorter timeout gives up on a
    Job the chart still allows to run."""
    chart_defaults = {"enabled": True, "networkPolicy": {"kubernetesApi": {"cidrs": CIDRS}}}
    longest = max(d for values in [chart_defaults] + [env_values(e, enable=True) for e in ENVIRONMENTS]
                  for d in hook_deadlines(values).values())
    assert longest == 1800  # republish-templates: 300 + 2 x 600 + 300, as the README computes it
    commands = [c for doc in (CHART_README, (ROOT / "README.md").read_text())
                for c in re.findall(r"helm (?:upgrade|install) [^`\n]*", doc)]
    assert commands
    for command in commands:
        timeout = re.search(r"--timeout[ =](\S+)", command)
        assert timeout and "--wait" in command.split(), command
        assert seconds(timeout.group(1)) >= longest, command


# ------------------------------------------------------------------------ the real API server


@pytest.fixture(scope="module")
def argocd_crds(kube_cluster, admin_kubeconfig):
    """Argo CD's Application and AppProject CRDs (v3.5.1) on the real kube-apiserver."""
    files = sorted(ARGOCD_CRDS.glob("*.yaml"))
    if not files:
        pytest.skip(f"Argo CD CRDs not found: looked in {ARGOCD_CRDS}")
    r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                *[f"--filename={f}" for f in files])
    assert r.returncode == 0, r.stderr
    kube_cluster.wait_established(files)


def test_the_api_server_accepts_the_project_and_the_application_with_nothing_dropped(
        kube, argocd_crds, admin_kubeconfig) -> None:
    """Strict field validation: an unknown or misplaced field is an error, never silently pruned."""
    kube.ensure_namespace(ARGOCD_NAMESPACE)
    text = readme_block("AppProject") + "---\n" + readme_block("Application")
    try:
        for extra in (["--dry-run=server"], []):
            r = kubectl(admin_kubeconfig, "apply", "--server-side", "--validate=strict",
                        f"--field-manager={FIELD_MANAGER}", *extra, "-f", "-", stdin=text)
            assert r.returncode == 0, r.stderr
            assert warnings(r.stderr) == []
        for sent, plural in ((PROJECT, "appprojects"), (APPLICATION, "applications")):
            stored = kube.http.get(f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NAMESPACE}/{plural}/"
                                   f"{sent['metadata']['name']}").json()
            assert stored["spec"] == sent["spec"]
    finally:
        # No Argo CD controller here to honour the finalizer: drop it first (a non-cascading
        # delete, docs/user-guide/app_deletion.md), or the delete waits for ever.
        kubectl(admin_kubeconfig, "-n", ARGOCD_NAMESPACE, "patch", "application", APPLICATION["metadata"]["name"],
                "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
        kubectl(admin_kubeconfig, "delete", "--ignore-not-found", "-f", "-", stdin=text)


def test_the_applications_render_installs_on_the_real_api_server(kube, crds, admin_kubeconfig) -> None:
    """What Argo CD would apply (server-side, the namespace CreateNamespace makes, restricted)."""
    objects = application_render()
    prepare_namespaces(kube, objects)
    text = yaml.safe_dump_all(objects)
    for _ in range(2):  # the second apply is Argo CD's next sync: accepted again, still no warnings
        r = kubectl(admin_kubeconfig, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=text)
        assert r.returncode == 0, r.stderr
        assert warnings(r.stderr) == []
    assert {o["metadata"].get("namespace") for o in objects} - {None} == {NAMESPACE, "coder-workspaces"}
    assert kube.get_object("namespace", None, "coder-workspaces")["metadata"]["labels"]


# ------------------------------------------------------------------------ RUNBOOK section 4

RUNBOOK = (ROOT / "RUNBOOK.md").read_text()
SOURCE = "coder-github-oauth-client-secret"
ES_API = "/apis/external-secrets.io/v1/namespaces/coder/externalsecrets"


def section_4_block() -> str:
    """The commands of section 4, as a person pastes them (after `follow` from section 0)."""
    section = RUNBOOK[RUNBOOK.index("## 4."):RUNBOOK.index("## 5.")]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "force-sync" in b]
    assert len(blocks) == 1, "section 4 must have one command block that forces the refresh"
    return blocks[0]


def follow_block() -> str:
    section = RUNBOOK[RUNBOOK.index("Follow a job you started"):]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


class Controllers:
    """What External Secrets and the Job controller would do, on the test server (nothing runs
    there): on a forced refresh, write the new value into the source Secret and then report the
    sync in the ExternalSecret's status, as ESO does (externalsecret_controller.go: Secret first,
    then `status.refreshTime` and `status.syncedResourceVersion`); mark each Job Complete, noting
    the source Secret's value at that moment (what the job would read)."""

    def __init__(self, kube, es: str | None) -> None:
        self.kube, self.es = kube, es
        self.read_by_jobs: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        from tests.test_runbook import set_status

        refresh_seen = False
        while not self.stop.wait(0.2):
            # Jobs first, and the refresh lands one round after the annotation is seen: a job
            # started without waiting for the sync is sure to read the old value.
            for job in self.kube.objects("job", "coder"):
                name = job["metadata"]["name"]
                if name not in self.read_by_jobs:
                    self.read_by_jobs[name] = self.kube.get_object("secret", "coder", SOURCE)["data"]["value"]
                    set_status(self.kube, name, "SuccessCriteriaMet", "Complete")
            if not self.es:
                continue
            es = self.kube.http.get(f"{ES_API}/{self.es}").json()
            if "force-sync" not in es["metadata"].get("annotations", {}) or es["status"]["syncedResourceVersion"] != "1-old":
                continue
            if refresh_seen:
                secret = self.kube.get_object("secret", "coder", SOURCE)
                secret["stringData"] = {"value": "new"}
                self.kube.put("secret", "coder", secret)
                es["status"]["syncedResourceVersion"] = "2-new"
                self.kube.http.put(f"{ES_API}/{self.es}/status", json=es).raise_for_status()
            refresh_seen = True

    def __enter__(self) -> Controllers:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def section_4_cluster(kube, es: str | None) -> None:
    """coder with the dev render's sync-external-auth CronJob, a rolled-out coderd Deployment, the
    source Secret holding the old value and (`es`) the ExternalSecret that delivers it, Ready."""
    import base64

    kube.ensure_namespace("coder")
    cronjob = rendered(env_values("dev")).get("CronJob", f"{RELEASE}-sync-external-auth")
    kube.put("cronjob", "coder", cronjob)
    kube.put("secret", "coder", {"metadata": {"name": SOURCE}, "data": {"value": base64.b64encode(b"old").decode()}})
    deployment = kube.put("deployment", "coder", {"metadata": {"name": "coder"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "coder"}}, "template": {
            "metadata": {"labels": {"app": "coder"}}, "spec": {"containers": [{"name": "coder", "image": "coder"}]}}}})
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": 1,
                            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    assert kube.http.put("/apis/apps/v1/namespaces/coder/deployments/coder/status", json=deployment).status_code == 200
    kube.http.delete(ES_API, params={"labelSelector": "test=section-4"})
    if es:
        created = kube.http.post(ES_API, json={
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": es, "labels": {"test": "section-4"}},
            "spec": {"secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                     "target": {"name": SOURCE}, "data": [{"secretKey": "value", "remoteRef": {"key": SOURCE}}]}})
        assert created.status_code == 201, created.text
        obj = created.json()
        obj["status"] = {"syncedResourceVersion": "1-old", "refreshTime": "2026-12-01T00:00:00Z", "conditions": [
            {"type": "Ready", "status": "True", "reason": "SecretSynced", "message": "Secret was synced",
             "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
        assert kube.http.put(f"{ES_API}/{es}/status", json=obj).status_code == 200


def run_section_4(kube, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace="coder", direct=True)}
    return subprocess.run(["bash", "-c", follow_block().replace("follow <name>\n", "") + section_4_block()],
                          env=env, capture_output=True, text=True, timeout=300)


def test_section_4_runs_the_job_only_after_the_external_secret_synced_the_new_value(
        kube, crds, tmp_path) -> None:
    """The ExternalSecret is found by its target (dev's comes from the platform's pipeline, under a
    name this chart does not know); the job starts only once ESO reported a sync after the forced
    refresh, so it reads the new value."""
    import base64

    section_4_cluster(kube, es="platform-github-oauth-secret")
    with Controllers(kube, "platform-github-oauth-secret") as controllers:
        r = run_section_4(kube, tmp_path)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        [(job, value)] = controllers.read_by_jobs.items()
        assert job.startswith(f"{RELEASE}-sync-external-auth-manual-")
        assert base64.b64decode(value) == b"new"
        assert "successfully rolled out" in r.stdout
    finally:
        kube.http.delete(ES_API, params={"labelSelector": "test=section-4"})


def test_section_4_stops_before_the_job_when_no_external_secret_delivers_the_secret(kube, crds, tmp_path) -> None:
    section_4_cluster(kube, es=None)
    with Controllers(kube, None) as controllers:
        r = run_section_4(kube, tmp_path)
    assert r.returncode != 0
    assert SOURCE in r.stderr and "no ExternalSecret" in r.stderr
    assert controllers.read_by_jobs == {}
