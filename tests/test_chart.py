"""The Helm chart, rendered with the real Helm engine for every values file.

Every object is validated with kubernetes-validate (strict) for every Kubernetes minor the chart
claims (Chart.yaml's kubeVersion floor to 1.37); CRD kinds (ExternalSecret, CiliumNetworkPolicy)
against the CRDs in ../shared/crds plus required-field checks of our own. What a real API server
would change is checked offline too: defaults it fills in inside atomic fields (server-side apply
conflicts), empty fields it does not store, namespaces an empty cluster lacks. Policy tests cover
hooks, CronJobs, security settings, RBAC, secrets, and the workspace guardrails (issue 8).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart_helpers import (
    CHART_DIR,
    DIGEST,
    ENVIRONMENTS,
    KUBE_FLOOR,
    NAMESPACE,
    NEWEST_CLAIMED,
    RELEASE,
    ROOT,
    SHARED_CRDS,
    Rendered,
    crd_problems,
    crd_schemas,
    deep_merge,
    empty_fields,
    env_of,
    env_values,
    job_spec,
    kube_version_floor,
    load_values,
    parse,
    pod_specs,
    render,
    rendered,
    shipped_minors,
    subcommand,
    supported_minors,
    template_files,
    unwritten_defaults,
)

KUBE_VERSION = kubernetes_validate.latest_version()
MINORS = supported_minors()
JOBS = ("sync-external-auth", "bootstrap-admin", "republish-templates", "recover", "doctor", "reap")
WRITING_JOBS = tuple(j for j in JOBS if j != "doctor")
KUBE_JOBS = {"sync-external-auth", "reap"}
CRD_KINDS = {"ExternalSecret", "CiliumNetworkPolicy"}
CILIUM_API_VERSION = "cilium.io/v2"
WS_NS = "coder-workspaces"
OPENAI_TEST_CIDR = "162.159.140.0/24"
KEYCLOAK_TEST_CIDR = "10.20.30.0/24"
API_TEST_CIDR = "20.50.60.70/32"

# Everything on, plain NetworkPolicy provider: the widest render.
FULL = {
    "enabled": True,
    "environment": "dev",
    "image": {"digest": DIGEST},
    "externalSecrets": {"enabled": True, "secretStoreRef": {"name": "vault"},
                        "githubOAuth": {"enabled": True}},
    "networkPolicy": {"kubernetesApi": {"cidrs": [API_TEST_CIDR]}},
    "reap": {"rules": [{"id": "alice", "owner": "alice", "idleAfter": "8h"},
                       {"id": "gitops", "template": "ameide-gitops", "exempt": True}]},
    "workspaces": {
        "enabled": True,
        "codex": {"enabled": True},
        "networkPolicy": {
            "provider": "kubernetes",
            "keycloak": {"enabled": True, "cidrs": [KEYCLOAK_TEST_CIDR]},
            "openai": {"cidrs": [OPENAI_TEST_CIDR]},
        },
    },
}
FULL_CILIUM = deep_merge(FULL, {
    "networkPolicy": {"provider": "cilium"},
    "workspaces": {"networkPolicy": {"provider": "cilium", "keycloak": {"fqdns": ["auth.example.org"]}}},
})


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def as_shipped() -> dict[str, Rendered]:
    """Each values file exactly as committed."""
    return {env: rendered(env_values(env)) for env in ENVIRONMENTS}


@pytest.fixture(scope="module")
def flipped() -> dict[str, Rendered]:
    """Each values file with the one flip `enabled: true`."""
    return {env: rendered(env_values(env, enable=True)) for env in ENVIRONMENTS}


@pytest.fixture(scope="module")
def dev(as_shipped: dict[str, Rendered]) -> Rendered:
    return as_shipped["dev"]


@pytest.fixture(scope="module")
def full() -> Rendered:
    return rendered(FULL)


@pytest.fixture(scope="module")
def full_cilium() -> Rendered:
    return rendered(FULL_CILIUM)


def all_renders(flipped: dict[str, Rendered], full: Rendered, full_cilium: Rendered) -> list[tuple[str, Rendered]]:
    return [*((f"values-{e}+enabled", r) for e, r in flipped.items()), ("full", full), ("full-cilium", full_cilium)]


@pytest.fixture(scope="module")
def every(flipped: dict[str, Rendered], full: Rendered, full_cilium: Rendered) -> list[tuple[str, Rendered]]:
    return all_renders(flipped, full, full_cilium)


@pytest.fixture(scope="module")
def defaults_enabled() -> Rendered:
    """values.yaml with `enabled: true` and the one value it then requires (the API server CIDRs
    the job NetworkPolicy needs with the default `kubernetes` provider)."""
    return rendered({"enabled": True, "networkPolicy": {"kubernetesApi": {"cidrs": [API_TEST_CIDR]}}})


@pytest.fixture(scope="module")
def checked(every: list[tuple[str, Rendered]], as_shipped: dict[str, Rendered],
            defaults_enabled: Rendered) -> list[tuple[str, Rendered]]:
    """Every render the schema and server checks cover: each values file as shipped and with
    `enabled: true`, values.yaml enabled, and the two widest renders."""
    return [*every, *((f"values-{e}", r) for e, r in as_shipped.items() if r.objects),
            ("values.yaml", rendered({})), ("values.yaml+enabled", defaults_enabled)]


@pytest.fixture(scope="module")
def environments(flipped: dict[str, Rendered], as_shipped: dict[str, Rendered]) -> list[tuple[str, Rendered]]:
    """What an environment installs: each values file with `enabled: true` (and dev as shipped)."""
    return [*((f"values-{e}+enabled", r) for e, r in flipped.items()), ("values-dev", as_shipped["dev"])]


def workloads(r: Rendered) -> list[dict[str, Any]]:
    return r.kind("Job") + r.kind("CronJob")


def hook_phase(obj: dict[str, Any]) -> str | None:
    return obj["metadata"]["annotations"].get("argocd.argoproj.io/hook")


def wave(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"].get("argocd.argoproj.io/sync-wave", "0"))


# ------------------------------------------------------------------------------- rendering & schema

def test_kubernetes_validate_is_current() -> None:
    versions = sorted(
        (tuple(int(p) for p in d.name.split("-")[0].lstrip("v").split(".")), d.name)
        for d in (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema").iterdir()
        if d.name.endswith("-local-strict")
    )
    assert KUBE_VERSION == ".".join(map(str, versions[-1][0]))


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_values_files_render(env: str, as_shipped: dict[str, Rendered]) -> None:
    objs = as_shipped[env].objects
    if load_values(env).get("enabled"):
        assert objs, f"values-{env}.yaml is enabled but renders nothing"
    else:
        assert objs == [], f"values-{env}.yaml is disabled but renders {len(objs)} objects"


def test_enablement_matrix() -> None:
    assert {e: bool(load_values(e).get("enabled")) for e in ENVIRONMENTS} == {
        "local": False, "dev": True, "staging": False, "production": False}
    for env in ("dev", "staging", "production"):  # fully wired: enabling is one flip
        values = load_values(env)
        assert values["workspaces"]["enabled"] is True, env


def test_no_values_file_ships_a_digest_no_release_made() -> None:
    """A digest appears in a values file only through the release workflow's pull request: a
    made-up one would satisfy the check below and fail every pull."""
    for env in ENVIRONMENTS:
        assert load_values(env).get("image", {}).get("digest", "") == "", env


def test_supported_kubernetes_range() -> None:
    """kubeVersion's floor is the minor the real API server tests run (1.33), and every minor from
    it to 1.37 has strict schemas here, so the validation below covers the whole claimed range."""
    assert yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"] == ">=1.33.0-0"
    assert kube_version_floor() == KUBE_FLOOR == (1, 33)
    shipped = shipped_minors()
    missing = [m for m in MINORS if tuple(int(x) for x in m.split(".")[:2]) not in shipped]
    assert not missing, f"kubernetes-validate {kubernetes_validate.__version__} lacks schemas for {missing}"
    assert MINORS[0] == "1.33.0" and MINORS[-1] == "1.37.0" == KUBE_VERSION
    assert shipped[-1] == NEWEST_CLAIMED
    readme = (ROOT / "README.md").read_text()
    assert "Kubernetes 1.33 to 1.37" in readme and '`kubeVersion: ">=1.33.0-0"`' in readme


@pytest.fixture(scope="module")
def distinct_builtin(checked: list[tuple[str, Rendered]]) -> list[tuple[str, dict[str, Any]]]:
    """Each distinct built-in object of those renders once (renders share most objects), with the
    first render that has it."""
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for label, r in checked:
        for obj in r.objects:
            if obj["kind"] not in CRD_KINDS:
                seen.setdefault(json.dumps(obj, sort_keys=True), (label, obj))
    return list(seen.values())


@pytest.mark.parametrize("version", MINORS)
def test_every_object_validates(version: str, distinct_builtin: list[tuple[str, dict[str, Any]]]) -> None:
    failures = []
    for label, obj in distinct_builtin:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            failures.append(f"{label}: {obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    assert not failures, f"Kubernetes {version}:\n" + "\n".join(failures)
    assert len(distinct_builtin) > 80
    assert {o["kind"] for _, o in distinct_builtin} == {
        "Job", "CronJob", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Namespace",
        "ResourceQuota", "LimitRange"}


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason="../shared/crds not present")
def test_custom_resources_validate_against_their_crds(checked: list[tuple[str, Rendered]]) -> None:
    """ExternalSecret and CiliumNetworkPolicy against the CRDs the cluster runs: served version,
    schema, no field the server would prune, no default it would fill in inside an atomic field."""
    schemas = crd_schemas()
    failures, counted = [], 0
    for label, r in checked:
        for obj in r.objects:
            if obj["kind"] not in CRD_KINDS:
                continue
            counted += 1
            where = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
            served, schema = schemas[(obj["apiVersion"], obj["kind"])]
            assert served, f"{where}: {obj['apiVersion']} is not served"
            failures += [f"{where}: {e.json_path}: {e.message}"
                         for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
            failures += [f"{where}: {p}" for p in crd_problems(obj, schema)]
    assert not failures, "\n".join(failures)
    assert counted >= 8


def test_server_defaults_inside_atomic_fields_are_written(distinct_builtin: list[tuple[str, dict[str, Any]]]) -> None:
    """A default the server fills in inside an atomic list or struct (podFailurePolicy rules,
    fieldRef, NetworkPolicy ports, roleRef, ...) makes a client-side install conflict with a later
    server-side apply (Argo CD `ServerSideApply=true`): the chart writes each such default."""
    failures = [f"{label}: {obj['kind']}/{obj['metadata']['name']}: {p} (Kubernetes {version})"
                for version in MINORS for label, obj in distinct_builtin for p in unwritten_defaults(obj, version)]
    assert not failures, "\n".join(failures)


def test_the_defaults_check_finds_what_a_real_server_showed() -> None:
    """The check above, on the shapes kube-apiserver 1.33 and 1.37 complained about."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "spec": {
        "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        "template": {"spec": {"containers": [{"name": "c", "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]}]}}}}
    for version in MINORS:
        assert unwritten_defaults(job, version) == [
            "Job.spec.podFailurePolicy.rules[0].onPodConditions[0].status",
            "Job.spec.template.spec.containers[0].env[0].valueFrom.fieldRef.apiVersion"]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}
    assert unwritten_defaults(policy, MINORS[0]) == ["NetworkPolicy.spec.egress[0].ports[0].protocol"]
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "roleRef": {"kind": "Role", "name": "r"},
               "subjects": [{"kind": "ServiceAccount", "name": "s"}, {"kind": "User", "name": "u"}]}
    assert unwritten_defaults(binding, MINORS[-1]) == ["RoleBinding.roleRef.apiGroup",
                                                       "RoleBinding.subjects[1].apiGroup"]
    assert empty_fields({"spec": {"ingress": [], "podSelector": {"matchLabels": {"a": ""}}}}) == ["spec.ingress"]


def test_no_empty_fields(checked: list[tuple[str, Rendered]]) -> None:
    """Nothing rendered as "", [], {} or null: the server would not store it, so a second
    server-side apply would not be a no-op."""
    failures = [f"{label}: {obj['kind']}/{obj['metadata']['name']}: {p}"
                for label, r in checked for obj in r.exact() for p in empty_fields(obj)]
    assert not failures, "\n".join(failures)


def test_every_environment_installs_on_an_empty_cluster(environments: list[tuple[str, Rendered]]) -> None:
    """Given only the release namespace, every object's namespace exists or is created by the same
    render, and nothing in a created namespace is a PreSync hook (which runs before it exists)."""
    for label, r in environments:
        created = r.names("Namespace")
        for obj in r.objects:
            ns = obj["metadata"].get("namespace")
            where = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
            if obj["kind"] == "Namespace":
                assert ns is None, where
                continue
            assert ns == NAMESPACE or ns in created, f"{where}: namespace {ns!r} is neither {NAMESPACE!r} nor created"
            if ns != NAMESPACE:
                assert hook_phase(obj) != "PreSync", where


def test_local_creates_its_workspace_namespace(flipped: dict[str, Rendered]) -> None:
    local = flipped["local"]
    reap_ns = env_of(local.get("CronJob", f"{RELEASE}-reaper"))["REAP_WORKSPACE_NAMESPACE"]["value"]
    assert reap_ns == WS_NS and local.get("Role", f"{RELEASE}-reap")["metadata"]["namespace"] == WS_NS
    assert local.get("Namespace", WS_NS)["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert local.get("ServiceAccount", "coder-workspace")["metadata"]["namespace"] == WS_NS
    assert not local.kind("NetworkPolicy") and not local.kind("CiliumNetworkPolicy")


def test_every_object_has_standard_labels(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        for obj in r.objects:
            labels = obj["metadata"].get("labels", {})
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                        "app.kubernetes.io/version", "app.kubernetes.io/component", "helm.sh/chart"):
                assert key in labels, f"{label}: {obj['kind']}/{obj['metadata']['name']} lacks {key}"
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") in (NAMESPACE, WS_NS), obj["metadata"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("enable", [False, True])
def test_lint_clean(env: str, enable: bool) -> None:
    report = helm.lint(CHART_DIR, env_values(env, enable=enable), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 1] == []


def test_lint_clean_full() -> None:
    for values in (FULL, FULL_CILIUM):
        report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == [] and report["messages"] == []


@pytest.mark.parametrize("bad, where", [
    ({"reap": {"maxStops": "many"}}, "/reap/maxStops"),
    ({"reap": {"idleAfter": "soon"}}, "/reap/idleAfter"),
    ({"reap": {"quotaAction": "delete"}}, "/reap/quotaAction"),
    ({"reap": {"exempt": ["no-slash"]}}, "/reap/exempt"),
    ({"reap": {"rules": [{"owner": "alice", "idleAfter": "8h"}]}}, "/reap/rules/0"),  # a rule needs its id
    ({"coder": {"readyTimeoutSeconds": "300"}}, "/coder/readyTimeoutSeconds"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"workspaces": {"networkPolicy": {"provider": "calico"}}}, "/workspaces/networkPolicy/provider"),
    ({"networkPolicy": {"kubernetesApi": {"cidrs": ["everything"]}}}, "/networkPolicy/kubernetesApi/cidrs"),
    ({"typo": True}, "typo"),
    ({"reap": {"maxStop": 3}}, "maxStop"),
])
def test_schema_rejects_bad_values_at_render(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        render(deep_merge(FULL, bad))
    assert where in str(exc.value)


def test_digest_required_outside_local_and_the_message_says_where_it_comes_from() -> None:
    for env in ("dev", "staging", "production"):
        with pytest.raises(helm.HelmError) as exc:
            render(env_values(env, enable=True, released=False))
        text = str(exc.value)
        assert f'image.digest is required when environment is "{env}"' in text
        assert ".github/workflows/release.yaml" in text and f"chart/values-{env}.yaml" in text
    # local may use a tag
    local = rendered(env_values("local", enable=True))
    images = {c["image"] for o in workloads(local) for p in pod_specs(o) for c in p["containers"]}
    assert images == {"ghcr.io/ameideio/coder-jobs:dev"}


def test_images_by_digest(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        if "local" in label:
            continue
        for obj in workloads(r):
            for pod in pod_specs(obj):
                for c in pod["containers"]:
                    assert re.fullmatch(r"[^@:]+(:[0-9]+)?[^@:]*@sha256:[0-9a-f]{64}", c["image"]), (label, c["image"])


def _walk_schema(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    if "properties" in node:
        for key, sub in node["properties"].items():
            p = f"{path}.{key}" if path else key
            if "description" not in sub:
                problems.append(f"{p}: no description")
            if "type" not in sub and "enum" not in sub:
                problems.append(f"{p}: no type")
            problems += _walk_schema(sub, p)
    if isinstance(node.get("items"), dict):
        problems += _walk_schema(node["items"], path + "[]")
    return problems


def _leaf_paths(values: Any, path: str = "") -> list[str]:
    if isinstance(values, dict) and values and not path.endswith(("Selector", "Labels", "hard", "default",
                                                                   "defaultRequest", "max", "requests", "limits",
                                                                   "podAnnotations", "nodeSelector", "affinity")):
        return [p for k, v in values.items() for p in _leaf_paths(v, f"{path}.{k}" if path else k)]
    return [path]


def test_schema_types_and_describes_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert _walk_schema(schema, "") == []
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def lookup(path: str) -> dict[str, Any]:
        node = schema
        for part in path.split("."):
            assert "properties" in node and part in node["properties"], f"{path}: not in values.schema.json"
            node = node["properties"][part]
        return node

    for path in _leaf_paths(defaults):
        lookup(path)


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = [p for p in _leaf_paths(defaults) if f"`{p}`" not in readme]
    assert not missing, f"chart/README.md does not document: {missing}"
    for topic in ("CiliumNetworkPolicy", "toFQDNs", "NetworkPolicy"):
        assert topic in readme


def test_notes(dev: Rendered) -> None:
    assert f"kubectl -n {NAMESPACE} create job --from=cronjob/{RELEASE}-recover" in dev.notes
    off = rendered(env_values("local"))
    assert "disabled" in off.notes


# -------------------------------------------------------------------------------- enabled: false

def test_disabled_renders_nothing_even_with_everything_else_on() -> None:
    assert render(deep_merge(FULL, {"enabled": False})) == []
    assert render(deep_merge(FULL_CILIUM, {"enabled": False})) == []
    assert render({}) == []  # the chart's own defaults are off too


# -------------------------------------------------------------------------------------------- hooks

def test_hook_phases_and_ordering(full: Rendered) -> None:
    jobs = {subcommand(j): j for j in full.kind("Job")}
    assert set(jobs) == {"sync-external-auth", "bootstrap-admin", "republish-templates"}
    sync, boot, repub = jobs["sync-external-auth"], jobs["bootstrap-admin"], jobs["republish-templates"]
    assert hook_phase(sync) == "PreSync"
    assert sync["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert hook_phase(boot) == hook_phase(repub) == "PostSync"
    for j in (boot, repub):
        assert j["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert wave(boot) < wave(repub)
    for j in jobs.values():
        a = j["metadata"]["annotations"]
        # hook-weight only counts for Helm when no sync-wave is set; both must say the same.
        assert a["helm.sh/hook-weight"] == a["argocd.argoproj.io/sync-wave"]
        assert a["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
        assert a["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_hook_jobs_shape(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        for job in r.kind("Job"):
            md, spec = job["metadata"], job["spec"]
            assert hook_phase(job), f"{label}: plain Job {md['name']}"
            assert "generateName" not in md and md["name"] == f"{RELEASE}-{subcommand(job)}"
            assert "ttlSecondsAfterFinished" not in spec, f"{label}: {md['name']} sets a TTL"
            assert 1 <= spec["backoffLimit"] <= 10
            env = env_of(job)
            floor = 0
            if "CODER_READY_TIMEOUT" in env:
                floor += int(env["CODER_READY_TIMEOUT"]["value"])
            if "TEMPLATE_BUILD_TIMEOUT" in env:
                n = len(env["TEMPLATES"]["value"].split(","))
                floor += int(env["TEMPLATE_BUILD_TIMEOUT"]["value"]) * n
            assert spec["activeDeadlineSeconds"] > floor, (label, md["name"])
            rules = spec["podFailurePolicy"]["rules"]
            assert {"action": "FailJob", "onExitCodes": {"containerName": "coder-jobs", "operator": "In",
                                                         "values": [2]}} in rules
            # status written out: a CronJob's jobTemplate without it is rejected up to 1.33
            assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in rules


def test_exit_codes_that_no_retry_can_change_fail_the_job_at_once(full: Rendered) -> None:
    """2 is bad configuration for every job; doctor's 1 is its report of drift (read-only)."""
    for obj in full.kind("Job") + full.kind("CronJob"):
        (fail,) = [r for r in job_spec(obj)["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
        expected = [1, 2] if subcommand(obj) == "doctor" else [2]
        assert fail["onExitCodes"]["values"] == expected, obj["metadata"]["name"]


def test_manual_runs_say_whether_they_are_dry_runs(full: Rendered) -> None:
    for obj in full.kind("CronJob"):
        labels = obj["spec"]["jobTemplate"]["metadata"].get("labels", {})
        if labels.get("coder-jobs/manual") == "true":
            dry = "--dry-run" in next(pod_specs(obj))["containers"][0]["args"]
            assert labels["coder-jobs/dry-run"] == str(dry).lower(), obj["metadata"]["name"]


def test_presync_dependencies_are_earlier_hooks(full: Rendered) -> None:
    """A PreSync hook runs before regular resources exist: its SA, Role, RoleBinding and source
    ExternalSecrets must be PreSync hooks in an earlier wave."""
    sync = full.get("Job", f"{RELEASE}-sync-external-auth")
    sa_name = sync["spec"]["template"]["spec"]["serviceAccountName"]
    deps = [full.get("ServiceAccount", sa_name), full.get("Role", sa_name), full.get("RoleBinding", sa_name)]
    deps += [full.get("ExternalSecret", n) for n in ("coder-github-oauth-client-id", "coder-github-oauth-client-secret")]
    for d in deps:
        assert hook_phase(d) == "PreSync", d["metadata"]["name"]
        assert wave(d) < wave(sync)
        assert d["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) == wave(d)
    # PostSync hooks rely on regular resources (synced and Healthy first)
    for name in ("bootstrap-admin", "republish-templates"):
        job = full.get("Job", f"{RELEASE}-{name}")
        sa = full.get("ServiceAccount", job["spec"]["template"]["spec"]["serviceAccountName"])
        assert hook_phase(sa) is None
    assert hook_phase(full.get("ExternalSecret", "coder-bootstrap-admin")) is None
    for cm in full.kind("ConfigMap"):
        assert hook_phase(cm) is None


def test_hooks_can_be_turned_off() -> None:
    r = rendered(deep_merge(FULL, {"syncExternalAuth": {"hook": False}, "bootstrapAdmin": {"hook": False},
                                   "templates": {"hook": False}}))
    assert r.kind("Job") == [] and r.hooks() == []
    assert f"{RELEASE}-recover" in r.names("CronJob")


# ----------------------------------------------------------------------------------------- CronJobs

def test_suspended_cronjob_for_every_job(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        for job in JOBS:
            cj = r.get("CronJob", f"{RELEASE}-{job}")
            assert cj["spec"]["suspend"] is True, (label, job)
            assert subcommand(cj) == job
            assert "--dry-run" not in next(pod_specs(cj))["containers"][0]["args"]
            assert job_spec(cj)["ttlSecondsAfterFinished"] > 0
        for job in WRITING_JOBS:
            cj = r.get("CronJob", f"{RELEASE}-{job}-dry-run")
            assert cj["spec"]["suspend"] is True
            assert subcommand(cj) == job
            assert "--dry-run" in next(pod_specs(cj))["containers"][0]["args"]


def test_manual_job_names_fit(every: list[tuple[str, Rendered]]) -> None:
    """`kubectl create job --from=cronjob/<name> <name>-manual-$(date +%s)` must make a valid Job."""
    for _, r in every:
        for cj in r.kind("CronJob"):
            name = cj["metadata"]["name"]
            assert len(name) <= 52
            assert len(f"{name}-manual-1999999999") <= 63, name


def test_reaper_cronjob(full: Rendered) -> None:
    cj = full.get("CronJob", f"{RELEASE}-reaper")
    spec = cj["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is False
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert subcommand(cj) == "reap"
    env = env_of(cj)
    assert env["REAP_WORKSPACE_NAMESPACE"]["value"] == WS_NS
    assert env["REAP_RULES_FILE"]["value"] == "/etc/coder-jobs/reap/rules.yaml"
    rules_cm = full.get("ConfigMap", f"{RELEASE}-reap-rules")
    assert yaml.safe_load(rules_cm["data"]["rules.yaml"]) == {"rules": FULL["reap"]["rules"]}
    from jobs.reap_rules import parse_rules

    assert len(parse_rules(yaml.safe_load(rules_cm["data"]["rules.yaml"]))) == 2  # the job accepts it
    mounts = {m["mountPath"] for m in next(pod_specs(cj))["containers"][0]["volumeMounts"]}
    assert "/etc/coder-jobs/reap" in mounts


def test_reaper_settings_map_to_env() -> None:
    r = rendered(deep_merge(FULL, {"reap": {"idleAfter": "90m", "maxStops": 5, "exempt": ["alice/*", "*/keep-*"],
                                            "maxWorkspacesPerUser": 4, "maxRunningPerUser": 2,
                                            "quotaAction": "stop", "concurrency": 8}}))
    env = {k: v.get("value") for k, v in env_of(r.get("CronJob", f"{RELEASE}-reaper")).items()}
    assert env["REAP_IDLE_AFTER"] == "90m" and env["REAP_MAX_STOPS"] == "5"
    assert env["REAP_EXEMPT"] == "alice/*,*/keep-*"
    assert env["REAP_MAX_WORKSPACES_PER_USER"] == "4" and env["REAP_MAX_RUNNING_PER_USER"] == "2"
    assert env["REAP_QUOTA_ACTION"] == "stop" and env["REAP_CONCURRENCY"] == "8"
    plain = env_of(rendered(FULL).get("CronJob", f"{RELEASE}-reaper"))
    assert "REAP_MAX_WORKSPACES_PER_USER" not in plain and "REAP_MAX_RUNNING_PER_USER" not in plain
    assert "REAP_EXEMPT" not in plain  # no exemptions: no variable (not an empty value)


def test_reconcile_cronjob(full: Rendered) -> None:
    cj = full.get("CronJob", f"{RELEASE}-reconcile")
    assert subcommand(cj) == "recover"
    assert cj["spec"]["concurrencyPolicy"] == "Forbid" and cj["spec"]["suspend"] is False
    off = rendered(deep_merge(FULL, {"recover": {"reconcile": {"enabled": False}}}))
    assert f"{RELEASE}-reconcile" not in off.names("CronJob")
    assert f"{RELEASE}-recover" in off.names("CronJob")


def test_scheduled_cronjobs_are_the_only_unsuspended(full: Rendered) -> None:
    running = {c["metadata"]["name"] for c in full.kind("CronJob") if not c["spec"]["suspend"]}
    assert running == {f"{RELEASE}-reaper", f"{RELEASE}-reconcile"}


def test_delete_orphans_flag_and_rbac() -> None:
    base = rendered(FULL)
    assert "--delete-orphans" not in next(pod_specs(base.get("CronJob", f"{RELEASE}-reaper")))["containers"][0]["args"]
    role = base.get("Role", f"{RELEASE}-reap")
    assert all("delete" not in rule["verbs"] for rule in role["rules"])
    on = rendered(deep_merge(FULL, {"reap": {"deleteOrphans": True}}))
    assert "--delete-orphans" in next(pod_specs(on.get("CronJob", f"{RELEASE}-reaper")))["containers"][0]["args"]
    for resource in ("pods", "deployments"):
        rules = [rule for rule in on.get("Role", f"{RELEASE}-reap")["rules"] if resource in rule["resources"]]
        assert rules and "delete" in rules[0]["verbs"], resource


def test_reaper_without_kubernetes_checks() -> None:
    r = rendered(deep_merge(FULL, {"reap": {"kubernetesChecks": False}}))
    cj = r.get("CronJob", f"{RELEASE}-reaper")
    assert "REAP_WORKSPACE_NAMESPACE" not in env_of(cj)
    assert next(pod_specs(cj))["automountServiceAccountToken"] is False
    assert f"{RELEASE}-reap" not in r.names("Role")


# ----------------------------------------------------------------------------------------- security

def test_pod_security(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        for obj in workloads(r):
            for pod in pod_specs(obj):
                where = f"{label}: {obj['kind']}/{obj['metadata']['name']}"
                psc = pod["securityContext"]
                assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, where
                assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert pod["restartPolicy"] == "Never"
                assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
                vols = {v["name"]: v for v in pod["volumes"]}
                assert "emptyDir" in vols["tmp"]
                for c in pod["containers"]:
                    sc = c["securityContext"]
                    assert sc["readOnlyRootFilesystem"] is True, where
                    assert sc["allowPrivilegeEscalation"] is False, where
                    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], where
                    assert sc.get("privileged") is not True
                    assert {"mountPath": "/tmp", "name": "tmp"} in c["volumeMounts"]
                    assert c["resources"]["requests"] and c["resources"]["limits"], where


def test_service_account_token_only_for_kubernetes_jobs(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        sas = {s["metadata"]["name"]: s for s in r.kind("ServiceAccount")}
        for obj in workloads(r):
            pod = next(pod_specs(obj))
            job = subcommand(obj)
            assert pod["automountServiceAccountToken"] is (job in KUBE_JOBS), (label, obj["metadata"]["name"])
            assert sas[pod["serviceAccountName"]]["automountServiceAccountToken"] is (job in KUBE_JOBS)


def test_one_service_account_per_job(full: Rendered) -> None:
    by_job: dict[str, set[str]] = {}
    for obj in workloads(full):
        by_job.setdefault(subcommand(obj), set()).add(next(pod_specs(obj))["serviceAccountName"])
    assert set(by_job) == set(JOBS)
    assert all(len(v) == 1 for v in by_job.values())
    assert len({next(iter(v)) for v in by_job.values()}) == len(JOBS)


def test_no_cluster_scoped_rbac_and_no_wildcards(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        assert not r.kind("ClusterRole") and not r.kind("ClusterRoleBinding"), label
        for role in r.kind("Role"):
            for rule in role["rules"]:
                for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                    assert "*" not in rule.get(field, []), (label, role["metadata"]["name"], rule)
                    assert not any("*" in x for x in rule.get(field, []) if x), (label, rule)
        for rb in r.kind("RoleBinding"):
            assert rb["roleRef"]["kind"] == "Role"
            assert rb["roleRef"]["name"] in r.names("Role")


def test_resource_names_wherever_the_api_allows(full: Rendered) -> None:
    role = full.get("Role", f"{RELEASE}-sync-external-auth")
    for rule in role["rules"]:
        if "resourceNames" not in rule:
            # create cannot be restricted by name: the name is not in the request URL
            assert rule["verbs"] == ["create"], rule
    by_resource = {(tuple(r["resources"]), tuple(r["verbs"])): r.get("resourceNames") for r in role["rules"]}
    assert by_resource[(("secrets",), ("get",))] == ["coder-github-oauth-client-id", "coder-github-oauth-client-secret"]
    assert by_resource[(("secrets",), ("get", "update", "patch"))] == ["coder-external-auth-github"]
    assert by_resource[(("deployments",), ("get", "patch"))] == ["coder"]
    assert (("events",), ("create",)) in by_resource
    reap = full.get("Role", f"{RELEASE}-reap")
    assert reap["metadata"]["namespace"] == WS_NS
    for rule in reap["rules"]:
        assert set(rule["verbs"]) <= {"get", "list"}, rule  # list cannot be name-restricted
    binding = full.get("RoleBinding", f"{RELEASE}-reap")
    assert binding["metadata"]["namespace"] == WS_NS
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-reap", "namespace": NAMESPACE}]
    # only the two Kubernetes jobs have any Role
    assert full.names("Role") == {f"{RELEASE}-sync-external-auth", f"{RELEASE}-reap", "coder-workspace"}


SECRETISH = re.compile(r"(PASSWORD|TOKEN|CLIENT_SECRET$|_KEY$)")


def test_no_literal_secret_values(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        assert not r.kind("Secret"), f"{label}: the chart must not carry Secret objects"
        for obj in workloads(r):
            for pod in pod_specs(obj):
                for c in pod["containers"]:
                    assert "envFrom" not in c
                    for e in c["env"]:
                        assert ("value" in e) != ("valueFrom" in e), e
                        if "valueFrom" in e:
                            assert set(e["valueFrom"]) <= {"secretKeyRef", "fieldRef"}, e
                        if SECRETISH.search(e["name"]):
                            assert "secretKeyRef" in e.get("valueFrom", {}), (label, e)
        for es in r.kind("ExternalSecret"):
            for d in es["spec"]["data"]:
                assert set(d["remoteRef"]) <= {"key", "property"}


def test_secrets_referenced(full: Rendered) -> None:
    env = env_of(full.get("Job", f"{RELEASE}-bootstrap-admin"))
    assert env["CODER_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "coder-bootstrap-admin", "key": "password"}
    assert env["CODER_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["CODER_SETUP_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    sync = env_of(full.get("Job", f"{RELEASE}-sync-external-auth"))
    assert sync["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
    assert sync["CODER_DEPLOYMENT"]["value"] == "coder"
    assert "CODER_ADMIN_PASSWORD" not in sync


def test_job_env_contract(full: Rendered) -> None:
    """Every variable the chart sets is one the jobs read."""
    from jobs.settings import known_env_vars

    known = known_env_vars()
    for obj in workloads(full):
        unknown = set(env_of(obj)) - known
        assert not unknown, (obj["metadata"]["name"], unknown)
    for job in ("republish-templates", "recover", "doctor"):
        env = env_of(full.get("CronJob", f"{RELEASE}-{job}"))
        assert env["TEMPLATES_DIR"]["value"] == "/templates"
        assert {"TEMPLATES", "CODER_URL"} <= set(env)
        # doctor publishes nothing: no revision, no build timeout (tests/test_job_env.py checks every variable)
        assert {"TEMPLATES_REVISION", "TEMPLATE_BUILD_TIMEOUT"} <= set(env) or job == "doctor"
    assert env_of(full.get("CronJob", f"{RELEASE}-reap"))["CODER_URL"]["value"] == \
        f"http://coder.{NAMESPACE}.svc.cluster.local"


def test_log_format_json(full: Rendered) -> None:
    for obj in workloads(full):
        args = next(pod_specs(obj))["containers"][0]["args"]
        assert args[:2] == ["--log-format", "json"]


# ------------------------------------------------------------------------------- ExternalSecrets (CRD)

def test_external_secrets_required_fields(full: Rendered) -> None:
    ess = full.kind("ExternalSecret")
    assert {e["metadata"]["name"] for e in ess} == {
        "coder-bootstrap-admin", "coder-github-oauth-client-id", "coder-github-oauth-client-secret"}
    for es in ess:
        assert es["apiVersion"] in ("external-secrets.io/v1", "external-secrets.io/v1beta1")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", es["metadata"]["name"])
        spec = es["spec"]
        assert spec["secretStoreRef"]["name"] and spec["secretStoreRef"]["kind"] in ("SecretStore", "ClusterSecretStore")
        assert spec["target"]["name"] == es["metadata"]["name"]
        assert spec["target"]["creationPolicy"] in ("Owner", "Orphan", "Merge", "None")
        assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", spec["refreshInterval"])
        assert spec["data"] and all(d["secretKey"] and d["remoteRef"]["key"] for d in spec["data"])
    # sources carry one value under key `value`, as sync-external-auth reads them
    for name in ("coder-github-oauth-client-id", "coder-github-oauth-client-secret"):
        assert [d["secretKey"] for d in full.get("ExternalSecret", name)["spec"]["data"]] == ["value"]


def test_external_secrets_need_a_store() -> None:
    with pytest.raises(helm.HelmError, match="secretStoreRef.name"):
        render(deep_merge(FULL, {"externalSecrets": {"secretStoreRef": {"name": ""}}}))


# ------------------------------------------------------------------------------------- templates

def test_template_configmaps_preserve_the_tree(full: Rendered) -> None:
    files = template_files()
    assert files, "chart/files/coder-templates is empty"
    cms = {c["metadata"]["name"]: c for c in full.kind("ConfigMap")}
    cj = full.get("CronJob", f"{RELEASE}-republish-templates")
    pod = next(pod_specs(cj))
    vol = next(v for v in pod["volumes"] if v["name"] == "templates")
    mounted: dict[str, str] = {}
    for source in vol["projected"]["sources"]:
        cm = cms[source["configMap"]["name"]]
        for item in source["configMap"]["items"]:
            assert "/" not in item["key"]
            assert re.fullmatch(r"[-._a-zA-Z0-9]+", item["key"])
            assert item["path"] not in mounted
            mounted[item["path"]] = cm["data"][item["key"]]
    # FULL turns Codex on, and the chart writes the release's values into coder-template.yaml's
    # `variables:` block (tests/test_template_variables.py); every other byte is as committed.
    on = {p: t.replace('codex_enabled: "false"', 'codex_enabled: "true"') if p.endswith("/coder-template.yaml") else t
          for p, t in files.items()}
    assert mounted == on  # every file, at its original relative path, byte for byte
    assert {"mountPath": "/templates", "name": "templates", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    nested = [p for p in files if p.count("/") >= 2]
    assert nested, "expected nested folders (modules/) in the templates"


def test_templates_env(full: Rendered) -> None:
    names = sorted({p.split("/")[0] for p in template_files() if p.count("/") == 1 and p.endswith(".tf")})
    assert names == ["ameide-dev", "ameide-gitops"]
    env = env_of(full.get("Job", f"{RELEASE}-republish-templates"))
    assert env["TEMPLATES"]["value"] == ",".join(names)
    chart_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    assert env["TEMPLATES_REVISION"]["value"].startswith(f"{chart_version}-")
    pinned = rendered(deep_merge(FULL, {"templates": {"revision": "abc1234", "names": ["ameide-dev"]}}))
    env = env_of(pinned.get("Job", f"{RELEASE}-republish-templates"))
    assert env["TEMPLATES_REVISION"]["value"] == f"{chart_version}-abc1234"
    assert env["TEMPLATES"]["value"] == "ameide-dev"
    assert f"{RELEASE}-template-ameide-gitops" not in pinned.names("ConfigMap")


def test_unknown_template_name_fails() -> None:
    with pytest.raises(helm.HelmError, match="no-such-template"):
        render(deep_merge(FULL, {"templates": {"names": ["no-such-template"]}}))


def test_template_checksum_changes_with_content(tmp_path: Path, full: Rendered) -> None:
    copy = tmp_path / "chart"
    shutil.copytree(CHART_DIR, copy)
    victim = sorted((copy / "files" / "coder-templates").rglob("*.tf"))[0]
    victim.write_text(victim.read_text() + "\n# edited\n")
    with helm.Chart.load(copy) as edited:
        changed = Rendered(parse(edited.render(FULL, name=RELEASE, namespace=NAMESPACE)))
    name = f"{RELEASE}-republish-templates"
    before = full.get("Job", name)["metadata"]["annotations"]["checksum/templates"]
    after = changed.get("Job", name)["metadata"]["annotations"]["checksum/templates"]
    assert before != after
    assert env_of(full.get("Job", name))["TEMPLATES_REVISION"] != env_of(changed.get("Job", name))["TEMPLATES_REVISION"]


# ------------------------------------------------------------------------------ job NetworkPolicy

def test_job_network_policy(full: Rendered) -> None:
    base = full.get("NetworkPolicy", f"{RELEASE}-jobs")
    assert set(base["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not base["spec"].get("ingress")
    selector = base["spec"]["podSelector"]["matchLabels"]
    for obj in workloads(full):
        labels = obj["spec"]["template"]["metadata"]["labels"] if obj["kind"] == "Job" else \
            obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    egress = base["spec"]["egress"]
    assert len(egress) == 2
    dns, coderd = egress
    assert {p["port"] for p in dns["ports"]} == {53}
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert coderd["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "coder",
                                                            "app.kubernetes.io/instance": "coder"}
    assert coderd["ports"] == [{"port": 8080, "protocol": "TCP"}]
    api = full.get("NetworkPolicy", f"{RELEASE}-jobs-kube-api")
    assert api["spec"]["podSelector"]["matchLabels"]["coder-jobs/kubernetes-api"] == "true"
    assert api["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": API_TEST_CIDR}}], "ports": [{"port": 443, "protocol": "TCP"}]}]


def test_job_network_policy_cilium(full_cilium: Rendered) -> None:
    api = full_cilium.get("CiliumNetworkPolicy", f"{RELEASE}-jobs-kube-api")
    assert api["spec"]["egress"][0]["toEntities"] == ["kube-apiserver"]
    assert f"{RELEASE}-jobs-kube-api" not in full_cilium.names("NetworkPolicy")


def test_job_network_policy_needs_api_cidrs() -> None:
    with pytest.raises(helm.HelmError, match="kubernetesApi.cidrs"):
        render(deep_merge(FULL, {"networkPolicy": {"kubernetesApi": {"cidrs": []}}}))


def test_api_pods_are_labelled(full: Rendered) -> None:
    for obj in workloads(full):
        tmpl = obj["spec"]["template"] if obj["kind"] == "Job" else obj["spec"]["jobTemplate"]["spec"]["template"]
        assert tmpl["metadata"]["labels"]["coder-jobs/kubernetes-api"] == str(subcommand(obj) in KUBE_JOBS).lower()


# ------------------------------------------------------------------------- workspace guardrails (8)

def with_workspaces(every: list[tuple[str, Rendered]]) -> list[tuple[str, Rendered]]:
    """Renders where the workspace guardrails are on (all but values-local)."""
    out = [(label, r) for label, r in every if "local" not in label]
    assert len(out) == len(every) - 1
    return out


def _egress_rules(r: Rendered) -> list[dict[str, Any]]:
    rules = []
    for np in r.kind("NetworkPolicy") + r.kind("CiliumNetworkPolicy"):
        if np["metadata"]["namespace"] == WS_NS:
            rules += np["spec"].get("egress") or []
    return rules


def _cidrs(r: Rendered) -> set[str]:
    out = set()
    for rule in _egress_rules(r):
        out |= {t["ipBlock"]["cidr"] for t in rule.get("to", []) if "ipBlock" in t}
        out |= set(rule.get("toCIDR", []))
    return out


def _fqdns(r: Rendered) -> set[str]:
    return {f.get("matchName") or f.get("matchPattern") for rule in _egress_rules(r) for f in rule.get("toFQDNs", [])}


def test_default_deny_present(every: list[tuple[str, Rendered]]) -> None:
    for label, r in with_workspaces(every):
        deny = r.get("NetworkPolicy", f"{RELEASE}-workspaces-default-deny")
        assert deny["metadata"]["namespace"] == WS_NS
        assert deny["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "coder-workspace",
                                                              "app.kubernetes.io/part-of": "coder"}
        assert "Egress" in deny["spec"]["policyTypes"] and "Ingress" in deny["spec"]["policyTypes"]
        assert not deny["spec"].get("egress") and not deny["spec"].get("ingress"), label


def test_no_rule_allows_all_egress(every: list[tuple[str, Rendered]]) -> None:
    for label, r in every:
        for np in r.kind("NetworkPolicy"):
            for rule in np["spec"].get("egress") or []:
                assert rule.get("to"), f"{label}: {np['metadata']['name']} has an egress rule without `to`"
                assert rule.get("ports"), f"{label}: {np['metadata']['name']} has an egress rule without ports"
                for peer in rule["to"]:
                    assert peer, f"{label}: empty peer allows everything"
                    if "ipBlock" in peer:
                        assert peer["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0")
                    if "namespaceSelector" in peer:
                        assert peer["namespaceSelector"].get("matchLabels"), "{} selects every namespace"
        for cnp in r.kind("CiliumNetworkPolicy"):
            for rule in cnp["spec"]["egress"]:
                assert set(rule) - {"toPorts"}, rule
                assert rule.get("toPorts"), rule
                assert not set(rule.get("toEntities", [])) & {"all", "world", "cluster"}, rule
                assert not set(rule.get("toCIDR", [])) & {"0.0.0.0/0", "::/0"}, rule
                for f in rule.get("toFQDNs", []):
                    assert f.get("matchPattern") not in ("*", "**"), rule
                for ep in rule.get("toEndpoints", []):
                    assert ep.get("matchLabels"), rule


def test_ingress_only_from_coderd(every: list[tuple[str, Rendered]]) -> None:
    for label, r in with_workspaces(every):
        ingress_policies = [np for np in r.kind("NetworkPolicy")
                            if np["metadata"]["namespace"] == WS_NS and np["spec"].get("ingress")]
        assert len(ingress_policies) == 1, label
        rules = ingress_policies[0]["spec"]["ingress"]
        assert rules == [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "coder",
                                                                    "app.kubernetes.io/instance": "coder"}}}]}]
        for cnp in r.kind("CiliumNetworkPolicy"):
            assert "ingress" not in cnp["spec"]


def test_each_destination_only_when_enabled_kubernetes() -> None:
    github = set(load_values_default()["workspaces"]["networkPolicy"]["github"]["cidrs"])
    base = rendered(FULL)
    assert github | {KEYCLOAK_TEST_CIDR, OPENAI_TEST_CIDR, API_TEST_CIDR} <= _cidrs(base)
    assert any(p["port"] == 53 for rule in _egress_rules(base) for p in rule["ports"])
    toggles = {
        "github": github, "keycloak": {KEYCLOAK_TEST_CIDR}, "openai": {OPENAI_TEST_CIDR},
    }
    for key, cidrs in toggles.items():
        off = rendered(deep_merge(FULL, {"workspaces": {"networkPolicy": {key: {"enabled": False}}}}))
        assert not (_cidrs(off) & cidrs), key
        assert _cidrs(off) == _cidrs(base) - cidrs
    off = rendered(deep_merge(FULL, {"workspaces": {"networkPolicy": {"kubernetesApi": {"enabled": False}}}}))
    assert API_TEST_CIDR not in _cidrs(off)
    off = rendered(deep_merge(FULL, {"workspaces": {"networkPolicy": {"dns": {"enabled": False}}}}))
    assert not any(p["port"] == 53 for rule in _egress_rules(off) for p in rule["ports"])
    off = rendered(deep_merge(FULL, {"workspaces": {"networkPolicy": {"coderd": {"enabled": False}}}}))
    assert not any("podSelector" in t and t["podSelector"]["matchLabels"].get("app.kubernetes.io/name") == "coder"
                   for rule in _egress_rules(off) for t in rule["to"])


def test_openai_only_with_codex() -> None:
    for values in (FULL, FULL_CILIUM):
        on = rendered(values)
        off = rendered(deep_merge(values, {"workspaces": {"codex": {"enabled": False}}}))
        assert OPENAI_TEST_CIDR in _cidrs(on) or "api.openai.com" in _fqdns(on)
        assert OPENAI_TEST_CIDR not in _cidrs(off) and not any("openai" in f for f in _fqdns(off))
    # the openai switch alone does not open it without codex
    off = rendered(deep_merge(FULL_CILIUM, {"workspaces": {"codex": {"enabled": False},
                                                           "networkPolicy": {"openai": {"enabled": True}}}}))
    assert not any("openai" in f or "chatgpt" in f for f in _fqdns(off))


def test_cilium_destinations(full_cilium: Rendered) -> None:
    assert f"{RELEASE}-workspaces-egress" not in full_cilium.names("NetworkPolicy")
    fqdns = _fqdns(full_cilium)
    assert {"github.com", "api.openai.com", "auth.example.org"} <= fqdns
    rules = _egress_rules(full_cilium)
    assert any(r.get("toEntities") == ["kube-apiserver"] for r in rules)
    dns = [r for r in rules if any(p["port"] == "53" for tp in r.get("toPorts", []) for p in tp["ports"])]
    assert dns and dns[0]["toPorts"][0]["rules"]["dns"], "toFQDNs needs the DNS proxy rule"
    off = rendered(deep_merge(FULL_CILIUM, {"workspaces": {"networkPolicy": {"github": {"enabled": False},
                                                                             "keycloak": {"enabled": False}}}}))
    assert not ({"github.com", "auth.example.org"} & _fqdns(off))


def test_cilium_network_policy_required_fields(every: list[tuple[str, Rendered]]) -> None:
    seen = 0
    for label, r in every:
        for cnp in r.kind("CiliumNetworkPolicy"):
            seen += 1
            assert cnp["apiVersion"] == CILIUM_API_VERSION
            assert cnp["metadata"]["name"] and cnp["metadata"]["namespace"]
            spec = cnp["spec"]
            assert set(spec) <= {"endpointSelector", "egress", "ingress", "description"}
            assert spec["endpointSelector"]["matchLabels"], label
            assert isinstance(spec["egress"], list) and spec["egress"]
            for rule in spec["egress"]:
                peers = set(rule) & {"toEndpoints", "toFQDNs", "toCIDR", "toEntities", "toServices", "toCIDRSet"}
                assert len(peers) == 1, rule
                assert set(rule) - peers <= {"toPorts"}, rule
                for tp in rule["toPorts"]:
                    for p in tp["ports"]:
                        assert isinstance(p["port"], str) and 1 <= int(p["port"]) <= 65535
                        assert p["protocol"] in ("TCP", "UDP", "ANY")
                for f in rule.get("toFQDNs", []):
                    assert len(f) == 1 and set(f) <= {"matchName", "matchPattern"}
                    assert re.fullmatch(r"[*a-z0-9]([-*a-z0-9.]*[a-z0-9])?", next(iter(f.values())))
    assert seen >= 2


def test_plain_provider_refuses_fqdn_only_destinations() -> None:
    with pytest.raises(helm.HelmError, match="openai"):
        render(deep_merge(FULL, {"workspaces": {"networkPolicy": {"openai": {"cidrs": []}}}}))


def test_quota_and_limits(full: Rendered) -> None:
    quota = full.get("ResourceQuota", f"{RELEASE}-workspaces")
    assert quota["metadata"]["namespace"] == WS_NS
    hard = quota["spec"]["hard"]
    for key in ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory",
                "requests.ephemeral-storage", "limits.ephemeral-storage"):
        assert key in hard
    lr = full.get("LimitRange", f"{RELEASE}-workspaces")
    limit = lr["spec"]["limits"][0]
    assert limit["type"] == "Container"
    for field in ("default", "defaultRequest"):
        assert {"cpu", "memory", "ephemeral-storage"} <= set(limit[field])


def test_workspace_role(every: list[tuple[str, Rendered]]) -> None:
    for label, r in with_workspaces(every):
        role = r.get("Role", "coder-workspace")
        assert role["metadata"]["namespace"] == WS_NS
        granted = {(g, res) for rule in role["rules"] for g in rule["apiGroups"] for res in rule["resources"]}
        assert not any(res == "secrets" or res.startswith("secrets/") for _, res in granted), label
        verbs = {v for rule in role["rules"] for v in rule["verbs"]}
        assert verbs == {"get", "list", "watch"}, label
        for res in ("pods", "pods/log", "services", "configmaps", "events"):
            assert ("", res) in granted
        assert ("apps", "deployments") in granted
        sa = r.get("ServiceAccount", "coder-workspace")
        rb = r.get("RoleBinding", "coder-workspace")
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "coder-workspace", "namespace": WS_NS}]
        assert sa["metadata"]["namespace"] == WS_NS


def test_workspace_writes_only_when_enabled() -> None:
    r = rendered(deep_merge(FULL, {"workspaces": {"rbac": {"allowWorkloadWrites": True}}}))
    role = r.get("Role", "coder-workspace")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert {"create", "delete"} <= verbs
    assert not any("secrets" in rule["resources"] for rule in role["rules"])


def test_workspaces_off_renders_no_guardrails() -> None:
    r = rendered(deep_merge(FULL, {"workspaces": {"enabled": False}}))
    assert not any(o["metadata"].get("namespace") == WS_NS and o["kind"] != "Role" and o["kind"] != "RoleBinding"
                   for o in r.objects)
    # the reaper keeps its read access to the namespace it checks, which is one that exists
    assert r.get("Role", f"{RELEASE}-reap")["metadata"]["namespace"] == NAMESPACE


def test_workspace_namespace_may_equal_release_namespace() -> None:
    r = rendered(deep_merge(FULL, {"workspaces": {"namespace": NAMESPACE}}))
    assert r.get("ResourceQuota", f"{RELEASE}-workspaces")["metadata"]["namespace"] == NAMESPACE
    assert env_of(r.get("CronJob", f"{RELEASE}-reaper"))["REAP_WORKSPACE_NAMESPACE"]["value"] == NAMESPACE
    # createNamespace (the default) does not try to create the namespace the release already has
    assert not r.kind("Namespace")


def test_dev_creates_the_workspace_namespace_and_keeps_it(dev: Rendered) -> None:
    ns = dev.get("Namespace", WS_NS)
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")


def load_values_default() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


# ------------------------------------------------------------------------- contract with the CLI

@pytest.mark.parametrize("source", ["dev", "full"])
def test_rendered_args_and_env_are_accepted_by_the_jobs(source: str, dev: Rendered, full: Rendered,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each workload's args parse with the real CLI and its env loads into the job's settings
    class without a configuration error (exit 2) - secrets and fieldRefs replaced by stand-ins."""
    from jobs import settings as settings_mod
    from jobs.cli import JOBS as CLI_JOBS
    from jobs.cli import build_parser

    templates = tmp_path / "templates"
    shutil.copytree(CHART_DIR / "files" / "coder-templates", templates)
    r = {"dev": dev, "full": full}[source]
    parser = build_parser()
    for obj in workloads(r):
        container = next(pod_specs(obj))["containers"][0]
        args = parser.parse_args(container["args"])
        assert args.job == subcommand(obj) and args.log_format == "json"
        env = {}
        for e in container["env"]:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e["valueFrom"]:
                if not e["valueFrom"]["secretKeyRef"].get("optional"):
                    env[e["name"]] = "Chart-Contract-Passw0rd-2026!"
            else:
                env[e["name"]] = NAMESPACE
        if "TEMPLATES_DIR" in env:
            env["TEMPLATES_DIR"] = str(templates)
        if "REAP_RULES_FILE" in env:
            rules = tmp_path / "rules.yaml"
            rules.write_text(r.get("ConfigMap", f"{RELEASE}-reap-rules")["data"]["rules.yaml"])
            env["REAP_RULES_FILE"] = str(rules)
        for name in settings_mod.known_env_vars():
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        cls = CLI_JOBS[args.job].settings
        loaded = settings_mod.load(cls)  # raises ConfigError (exit 2) on a bad value
        assert loaded is not None, obj["metadata"]["name"]


# ----------------------------------------------------------------- namespaces that exist (issue 20)

def test_the_reapers_role_defaults_to_the_release_namespace_without_workspace_guardrails() -> None:
    """With workspaces.enabled false nothing creates coder-workspaces: the reaper's Role, its
    REAP_WORKSPACE_NAMESPACE and the templates' namespace variable are the release namespace (where
    Coder's own chart runs workspaces by default)."""
    r = rendered(deep_merge(FULL, {"workspaces": {"enabled": False}}))
    assert r.get("Role", f"{RELEASE}-reap")["metadata"]["namespace"] == NAMESPACE
    assert env_of(r.get("CronJob", f"{RELEASE}-reaper"))["REAP_WORKSPACE_NAMESPACE"]["value"] == NAMESPACE
    settings = yaml.safe_load(r.get("ConfigMap", f"{RELEASE}-template-ameide-dev")["data"]["coder-template.yaml"])
    assert settings["variables"]["namespace"] == NAMESPACE
    chosen = rendered(deep_merge(FULL, {"workspaces": {"enabled": False}, "reap": {"workspaceNamespace": "elsewhere"}}))
    assert chosen.get("Role", f"{RELEASE}-reap")["metadata"]["namespace"] == "elsewhere"


def test_reaper_exemptions_in_the_shipped_values_name_the_admin_they_ship() -> None:
    for env in ENVIRONMENTS:
        values = deep_merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), load_values(env))
        owners = {glob.split("/")[0] for glob in values["reap"]["exempt"]}
        assert owners <= {values["coder"]["admin"]["username"]}, f"values-{env}.yaml exempts {owners}"
