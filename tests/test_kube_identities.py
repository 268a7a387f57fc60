"""The Kubernetes jobs as the identities the chart gives them, on the real API server.

The chart's ServiceAccount, Role and RoleBinding for a job are installed as rendered; the job
runs with a bound token of that ServiceAccount. What it needs must work; a write outside its
Role must be refused by RBAC. Request counts come from the API server's own audit log.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException

from jobs.sync_external_auth import KEY_CLIENT_SECRET
from tests.chart_helpers import NAMESPACE, deep_merge, env_values, render
from tests.conftest import CANARY_CLIENT_SECRET, CANARY_PASSWORD, assert_no_secret, run_job

TARGET = "coder-external-auth-github"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def install_identity(kube, component: str, **values) -> str:
    """Apply the ServiceAccount, Roles and RoleBindings the dev render gives `component`; its SA name."""
    objects = render(deep_merge(env_values("dev", enable=True), values))
    mine = [o for o in objects if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")
            and o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert {o["kind"] for o in mine} == {"ServiceAccount", "Role", "RoleBinding"}, component
    for o in sorted(mine, key=lambda o: ("ServiceAccount", "Role", "RoleBinding").index(o["kind"])):
        body = {k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
        kube.put(o["kind"].lower(), o["metadata"].get("namespace", NAMESPACE), body)
    return next(o["metadata"]["name"] for o in mine if o["kind"] == "ServiceAccount")


@pytest.fixture
def sync_world(kube, tmp_path):
    kube.put("secret", NAMESPACE, {"metadata": {"name": "coder-github-oauth-client-id"}, "data": {"value": b64("Iv1.identity\n")}})
    kube.put("secret", NAMESPACE, {"metadata": {"name": "coder-github-oauth-client-secret"},
                                   "data": {"value": b64(CANARY_CLIENT_SECRET + "\n")}})
    labels = {"app.kubernetes.io/name": "coder"}
    kube.put("deployment", NAMESPACE, {"metadata": {"name": "coder", "labels": labels}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "coder", "image": "coder"}]}}}})
    sa = install_identity(kube, "sync-external-auth")
    token = kube.token_for(NAMESPACE, sa)
    env = {"KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace=NAMESPACE, token=token),
           "POD_NAMESPACE": NAMESPACE, "CODER_DEPLOYMENT": "coder"}
    return env, kube.service_account_user(NAMESPACE, sa)


def test_sync_external_auth_converges_as_its_service_account_and_its_noop_is_three_requests(kube, sync_world):
    env, user = sync_world
    first = run_job("sync-external-auth", env=env)
    assert first.rc == 0, first.output
    assert kube.secret_data(NAMESPACE, TARGET)[KEY_CLIENT_SECRET] == CANARY_CLIENT_SECRET
    assert len(kube.rollouts(NAMESPACE, "coder")) == 1
    assert [e["reason"] for e in kube.objects("event", NAMESPACE)] == ["ExternalAuthSecretCreated"]
    audited = kube.audit(user)
    refused = [(e["verb"], e["requestURI"]) for e in audited if e["responseStatus"]["code"] in (401, 403)]
    assert audited and refused == []

    kube.clear_log()
    again = run_job("sync-external-auth", env=env)
    assert again.rc == 0, again.output
    noop = kube.audit(user)
    assert [(e["verb"], e["objectRef"]["name"]) for e in noop] == [
        ("get", "coder-github-oauth-client-id"), ("get", "coder-github-oauth-client-secret"), ("get", TARGET)]
    assert_no_secret(first, CANARY_CLIENT_SECRET)
    assert_no_secret(again, CANARY_CLIENT_SECRET)
    for event in kube.objects("event", NAMESPACE):
        assert CANARY_CLIENT_SECRET not in str(event)


def forbidden(call) -> None:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value


def test_sync_external_auth_identity_can_write_nothing_outside_its_role(kube, sync_world, tmp_path):
    env, _user = sync_world
    api = kconfig.new_client_from_config(config_file=env["KUBECONFIG"], client_configuration=k8s.Configuration())
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    try:
        forbidden(lambda: core.list_namespaced_secret(NAMESPACE))
        forbidden(lambda: core.patch_namespaced_secret("coder-github-oauth-client-id", NAMESPACE,
                                                       {"metadata": {"labels": {"x": "y"}}},
                                                       _content_type="application/merge-patch+json"))
        forbidden(lambda: core.delete_namespaced_secret("coder-github-oauth-client-secret", NAMESPACE))
        forbidden(lambda: apps.delete_namespaced_deployment("coder", NAMESPACE))
        forbidden(lambda: core.create_namespaced_config_map(NAMESPACE, {"metadata": {"name": "x"}}))
        forbidden(lambda: core.read_namespaced_secret("coder-github-oauth-client-id", "coder-workspaces"))
    finally:
        api.close()


# ---------------------------------------------------------------- reap's Kubernetes part

WORKSPACES = "coder-workspaces"


def ghost_workspace(kube, wid: str) -> None:
    """A workspace's Deployment and pod whose workspace coderd no longer knows (a database reset)."""
    labels = {"app.kubernetes.io/name": "coder-workspace", "com.coder.workspace.id": wid}
    kube.put("deployment", WORKSPACES, {"metadata": {"name": f"coder-{wid}", "labels": labels}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"com.coder.workspace.id": wid}},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "dev", "image": "envbuilder"}]}}}})
    kube.put("pod", WORKSPACES, {"metadata": {"name": f"coder-{wid}-abc12", "labels": labels},
                                 "spec": {"containers": [{"name": "dev", "image": "envbuilder"}]}})


@pytest.fixture
def reap_world(kube, coderd, tmp_path):
    coderd.create_user("admin", password=CANARY_PASSWORD)
    sa = install_identity(kube, "reap", reap={"deleteOrphans": True})
    token = kube.token_for(NAMESPACE, sa)
    env = {"CODER_URL": coderd.url, "CODER_ADMIN_EMAIL": "admin@example.com", "CODER_ADMIN_PASSWORD": CANARY_PASSWORD,
           "CODER_READY_TIMEOUT": "20", "REAP_WORKSPACE_NAMESPACE": WORKSPACES,
           "KUBECONFIG": kube.kubeconfig(tmp_path / "kc", namespace=NAMESPACE, token=token)}
    return env, kube.service_account_user(NAMESPACE, sa)


def test_reap_finds_and_deletes_orphans_as_its_service_account(kube, reap_world):
    env, user = reap_world
    ghosts = [str(uuid.uuid4()) for _ in range(2)]
    for wid in ghosts:
        ghost_workspace(kube, wid)
    kube.put("pod", WORKSPACES, {"metadata": {"name": "other-app", "labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "x", "image": "x"}]}})
    dry = run_job("reap", "--delete-orphans", "--dry-run", env=env)
    assert dry.rc == 0, dry.output
    assert len(kube.objects("pod", WORKSPACES)) == 3

    result = run_job("reap", "--delete-orphans", env=env)
    assert result.rc == 0, result.output
    assert [p["metadata"]["name"] for p in kube.objects("pod", WORKSPACES)] == ["other-app"]
    assert kube.objects("deployment", WORKSPACES) == []
    refused = [(e["verb"], e["requestURI"]) for e in kube.audit(user) if e["responseStatus"]["code"] in (401, 403)]
    assert refused == []
    assert_no_secret(result, CANARY_PASSWORD)


def test_reap_identity_can_write_nothing_outside_its_role(kube, reap_world):
    env, _user = reap_world
    api = kconfig.new_client_from_config(config_file=env["KUBECONFIG"], client_configuration=k8s.Configuration())
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    try:
        forbidden(lambda: core.create_namespaced_pod(WORKSPACES, {"metadata": {"name": "x"},
                                                                  "spec": {"containers": [{"name": "x", "image": "x"}]}}))
        forbidden(lambda: apps.patch_namespaced_deployment("coder", NAMESPACE, {"spec": {"replicas": 0}},
                                                           _content_type="application/merge-patch+json"))
        forbidden(lambda: core.list_namespaced_pod(NAMESPACE))
        forbidden(lambda: core.read_namespaced_secret("coder-github-oauth-client-secret", NAMESPACE))
        forbidden(lambda: core.delete_collection_namespaced_pod(WORKSPACES))
    finally:
        api.close()
