"""jobs.kube: client and namespace resolution, the typed helpers, error conversion and retries,
against the real kube-apiserver (through the fault proxy) with the real kubernetes client."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pytest
from kubernetes import client as k8s

from jobs import kube
from jobs.errors import ConfigError, JobError
from tests.conftest import REPO

NS = "coder"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def fake(kube):
    return kube


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(kube, "READ_BACKOFF_S", 0.01)


@pytest.fixture
def api(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    a = kube.api_client()
    yield a
    a.close()


def deployment(name="coder"):
    labels = {"app.kubernetes.io/name": name}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {"keep": "me"}},
                                  "spec": {"containers": [{"name": "coder", "image": "ghcr.io/coder/coder:v2"}]}}}}


# ------------------------------------------------------------------ client and namespace


def test_api_client_from_kubeconfig_leaves_the_global_default_alone(fake, api):
    assert api.configuration.host == fake.url
    assert k8s.Configuration.get_default_copy().host != fake.url
    assert kube.read_secret(api, NS, "nope") is None
    (req,) = fake.requests("GET", r"/secrets/nope$")
    assert req.headers["authorization"] == f"Bearer {fake.server.job_token}"


def test_api_client_in_cluster(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token-123")
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    a = kube.api_client()
    try:
        assert a.configuration.host == "https://10.96.0.1:443"
        assert a.configuration.api_key["BearerToken"] == "bearer sa-token-123"
        assert k8s.Configuration.get_default_copy().host != "https://10.96.0.1:443"
    finally:
        a.close()


def test_api_client_without_any_configuration_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="KUBECONFIG"):
        kube.api_client()


def test_current_namespace_order(fake, tmp_path, monkeypatch):
    sa = tmp_path / "namespace"
    monkeypatch.setattr(kube, "SA_NAMESPACE_FILE", sa)
    monkeypatch.setenv("KUBECONFIG", fake.kubeconfig(tmp_path / "kc", namespace="from-kubeconfig"))
    assert kube.current_namespace("explicit") == "explicit"
    assert kube.current_namespace(None) == "from-kubeconfig"
    sa.write_text("from-sa\n")
    assert kube.current_namespace(None) == "from-sa"
    sa.unlink()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="POD_NAMESPACE"):
        kube.current_namespace(None)


def test_jobs_that_do_not_touch_kubernetes_never_import_it():
    # The reaper needs Kubernetes only with REAP_WORKSPACE_NAMESPACE; sync-external-auth always does.
    code = ("import sys, jobs.cli, jobs.bootstrap_admin, jobs.republish, jobs.recover, jobs.doctor, "
            "jobs.reap; assert 'kubernetes' not in sys.modules, sorted(m for m in sys.modules if 'kube' in m)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ secrets


def test_secret_create_read_replace_with_resource_version(fake, api):
    body = {"metadata": {"name": "s", "labels": {"a": "1"}}, "data": {"k": b64("v1")}}
    created = kube.create_secret(api, NS, body)
    assert created.metadata.resource_version
    got = kube.read_secret(api, NS, "s")
    assert got.data == {"k": b"v1"}
    assert "v1" not in repr(got) and b64("v1") not in repr(got)  # a Secret's value is never in its repr

    with pytest.raises(kube.KubeConflict) as exc:
        kube.create_secret(api, NS, body)
    assert exc.value.status == 409 and exc.value.reason == "AlreadyExists"

    replaced = kube.replace_secret(api, NS, kube.with_content(got, data={"k": b64("v2")}))
    assert replaced.data == {"k": b"v2"}
    assert fake.requests("PUT")[-1].json()["metadata"]["resourceVersion"] == got.metadata.resource_version

    stale = kube.with_content(got, data={"k": b64("v3")})  # got's resourceVersion is stale now
    with pytest.raises(kube.KubeConflict) as exc:
        kube.replace_secret(api, NS, stale)
    assert exc.value.reason == "Conflict" and "has been modified" in str(exc.value)
    assert "djM=" not in str(exc.value)  # never the request body

    unconditional = {**stale, "metadata": {k: v for k, v in stale["metadata"].items() if k != "resourceVersion"}}
    with pytest.raises(ValueError):
        kube.replace_secret(api, NS, unconditional)


def test_replace_of_a_deleted_secret_is_a_conflict_on_its_uid(fake, api):
    # The object we read carries its uid: the real server checks it as a precondition and
    # answers 409 (not 404), so the caller re-reads, exactly as after a stale resourceVersion.
    kube.create_secret(api, NS, {"metadata": {"name": "gone"}, "data": {}})
    s = kube.read_secret(api, NS, "gone")
    fake.delete_object("secret", NS, "gone")
    with pytest.raises(kube.KubeConflict) as exc:
        kube.replace_secret(api, NS, kube.with_content(s))
    assert "Precondition failed: UID in precondition" in str(exc.value)
    assert kube.read_secret(api, NS, "gone") is None


# ------------------------------------------------------------------ errors and retries


def test_a_503_with_retry_after_on_a_read_is_repeated_by_the_client_itself(fake, api):
    # urllib3's default Retry repeats a GET answered 503 + Retry-After (what the module docstring relies on).
    fake.put("secret", NS, {"metadata": {"name": "s"}, "data": {"k": b64("v")}})
    fake.fail_next(503, n=1, path_regex=r"/secrets/s$", method="GET")
    assert kube.read_secret(api, NS, "s") is not None
    assert [r.status for r in fake.requests("GET", r"/secrets/s$")] == [503, 200]


def test_read_retries_5xx_then_succeeds(fake, api):
    fake.put("secret", NS, {"metadata": {"name": "s"}, "data": {"k": b64("v")}})
    fake.fail_next(500, n=2, path_regex=r"/secrets/s$")
    assert kube.read_secret(api, NS, "s") is not None
    assert len(fake.requests("GET", r"/secrets/s$")) == 3


def test_read_gives_up_with_status_and_message(fake, api):
    fake.fail_next(500, n=50, path_regex=r"/secrets/s$")
    with pytest.raises(kube.KubeAPIError) as exc:
        kube.read_secret(api, NS, "s")
    assert exc.value.status == 500 and exc.value.exit_code == 1
    assert str(exc.value) == f"read Secret {NS}/s: HTTP 500 InternalError: injected fault 500"
    assert len(fake.requests("GET", r"/secrets/s$")) == kube.READ_ATTEMPTS


def test_client_errors_and_writes_are_not_retried(fake, api):
    fake.fail_next(403, n=5, path_regex=r"/secrets/s$")
    with pytest.raises(kube.KubeAPIError) as exc:
        kube.read_secret(api, NS, "s")
    assert exc.value.status == 403
    assert len(fake.requests("GET", r"/secrets/s$")) == 1

    fake.fail_next(500, n=5, method="POST")
    with pytest.raises(kube.KubeAPIError) as exc:
        kube.create_secret(api, NS, {"metadata": {"name": "w"}, "data": {"k": b64("sekrit-value")}})
    assert exc.value.status == 500 and "sekrit" not in str(exc.value) and b64("sekrit-value") not in str(exc.value)
    assert len(fake.requests("POST")) == 1


def test_unreachable_api_is_a_job_error(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = fake.kubeconfig(tmp_path / "kc")
    text = open(cfg).read().replace(fake.url, "http://127.0.0.1:9")  # discard port: refused
    open(cfg, "w").write(text)
    monkeypatch.setenv("KUBECONFIG", cfg)
    a = kube.api_client()
    try:
        with pytest.raises(JobError) as exc:
            kube.read_secret(a, NS, "s")
    finally:
        a.close()
    assert isinstance(exc.value, kube.KubeAPIError) and exc.value.status is None
    assert "cannot reach the Kubernetes API" in str(exc.value)


def test_from_api_exception_uses_only_the_status_message():
    from kubernetes.client.rest import ApiException

    exc = ApiException(status=422, reason="Unprocessable Entity", body=json.dumps(
        {"kind": "Status", "status": "Failure", "reason": "Invalid", "message": 'Secret "x" is invalid: data: bad', "code": 422}))
    err = kube.from_api_exception(exc, "create Secret ns/x")
    assert str(err) == 'create Secret ns/x: HTTP 422 Invalid: Secret "x" is invalid: data: bad'
    err = kube.from_api_exception(ApiException(status=502, reason="Bad Gateway", body="<html>proxy</html>"), "read")
    assert str(err) == "read: HTTP 502 Bad Gateway" and err.retryable


# ------------------------------------------------------------------ deployments and events


def test_patch_pod_template_annotations_is_a_merge_patch(fake, api):
    fake.put("deployment", NS, deployment())
    kube.patch_pod_template_annotations(api, NS, "coder", {"coder-jobs.ameide.io/x": "sha256:1"})
    (req,) = fake.requests("PATCH")
    assert req.headers["content-type"].startswith("application/merge-patch+json")
    dep = kube.read_deployment(api, NS, "coder")
    assert dep.pod_template_annotations == {"keep": "me", "coder-jobs.ameide.io/x": "sha256:1"}
    assert len(fake.rollouts(NS, "coder")) == 1
    kube.patch_pod_template_annotations(api, NS, "coder", {"coder-jobs.ameide.io/x": None})
    assert kube.read_deployment(api, NS, "coder").pod_template_annotations == {"keep": "me"}
    assert kube.read_deployment(api, NS, "missing") is None


def test_record_event_is_accepted_by_the_real_server_and_reads_back_through_both_event_apis(fake, api):
    s = kube.create_secret(api, NS, {"metadata": {"name": "target"}, "data": {}})
    kube.record_event(api, kube.ObjectRef.of(s.metadata, kind="Secret", api_version="v1"), "SomethingHappened", "a message",
                      action="Update")
    (ev,) = fake.objects("event", NS)
    assert ev["reason"] == "SomethingHappened" and ev["message"] == "a message" and ev["type"] == "Normal"
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Secret", "namespace": NS, "name": "target",
                                    "uid": s.metadata.uid, "resourceVersion": s.metadata.resource_version}
    assert ev["source"] == {"component": "coder-jobs"} and ev["count"] == 1
    assert ev["reportingComponent"] == "coder-jobs" and ev["reportingInstance"] and ev["action"] == "Update"
    assert ev["eventTime"] and ev["firstTimestamp"] and ev["lastTimestamp"]
    assert ev["metadata"]["name"].startswith("target.")
    (v1,) = k8s.EventsV1Api(api).list_namespaced_event(NS).items  # the client's model requires eventTime
    assert v1.reporting_controller == "coder-jobs" and v1.regarding.name == "target" and v1.note == "a message"


@pytest.mark.parametrize(("change", "status", "words"), [
    (lambda b: b.update(eventTime=b["eventTime"][:19] + "Z"), 400, "cannot parse \"Z\" as \".000000\""),
    (lambda b: [b.pop(k) for k in ("reportingComponent", "reportingInstance", "action")], 422,
     "reportingComponent: Required value"),
])
def test_the_real_server_refuses_an_event_without_what_record_event_sends(fake, api, change, status, words):
    s = kube.create_secret(api, NS, {"metadata": {"name": "target"}, "data": {}})
    kube.record_event(api, kube.ObjectRef.of(s.metadata, kind="Secret", api_version="v1"), "R", "m", action="Update")
    (sent,) = fake.requests("POST", r"/events$")
    body = sent.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", body["eventTime"])  # always six digits
    body["metadata"]["name"] += "-b"
    change(body)
    refused = fake.http.post(f"/api/v1/namespaces/{NS}/events", json=body)
    assert refused.status_code == status and words in refused.json()["message"], refused.text


# ------------------------------------------------------------------ pods and quotas (the reaper's)


def test_list_pods_pages_and_filters(fake, api):
    for i in range(7):
        fake.put("pod", NS, {"metadata": {"name": f"ws-{i}", "labels": {"app.kubernetes.io/name": "coder-workspace"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}})
    fake.put("pod", NS, {"metadata": {"name": "other", "labels": {"app.kubernetes.io/name": "coder"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}})
    pods = list(kube.list_pods(api, NS, "app.kubernetes.io/name=coder-workspace", page_size=3))
    assert sorted(p.name for p in pods) == [f"ws-{i}" for i in range(7)]
    assert len(fake.requests("GET", r"/pods$")) == 3


def test_a_continue_token_that_expired_lists_again_from_the_start_and_yields_each_pod_once(fake, api):
    for i in range(7):
        fake.put("pod", NS, {"metadata": {"name": f"ws-{i}", "labels": {"app.kubernetes.io/name": "coder-workspace"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}})
    fake.expire_continue_next(n=1, path_regex=r"/pods$")
    pods = list(kube.list_pods(api, NS, "app.kubernetes.io/name=coder-workspace", page_size=3))
    assert sorted(p.name for p in pods) == [f"ws-{i}" for i in range(7)]  # every pod, none twice
    lists = fake.requests("GET", r"/pods$")
    assert [(r.status, "continue" in r.query) for r in lists] == [
        (200, False), (410, True), (200, False), (200, True), (200, True)]
    assert lists[1].response["reason"] == "Expired" and lists[1].response["metadata"]["continue"]


def test_a_continue_token_that_keeps_expiring_is_an_error_naming_the_list(fake, api):
    for i in range(4):
        fake.put("pod", NS, {"metadata": {"name": f"ws-{i}", "labels": {"app": "w"}},
                             "spec": {"containers": [{"name": "c", "image": "x"}]}})
    fake.expire_continue_next(n=kube.LIST_RESTARTS + 1, path_regex=r"/pods$")
    with pytest.raises(kube.KubeAPIError) as exc:
        list(kube.list_pods(api, NS, "app=w", page_size=2))
    assert exc.value.status == 410 and "list pods in coder (app=w): HTTP 410 Expired: The provided continue" in str(exc.value)


def test_list_resource_quotas(fake, api):
    fake.put("resourcequota", NS, {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}},
                                   "status": {"hard": {"pods": "10"}, "used": {"pods": "3"}}})
    (q,) = kube.list_resource_quotas(api, NS)
    assert q.used == {"pods": "3"} and q.hard == {"pods": "10"}


def test_delete_pod(fake, api):
    pod = fake.put("pod", NS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    with pytest.raises(kube.KubeConflict, match=r"the UID in the precondition \(0{8}-0{4}-0{4}-0{4}-0{12}\) does not "
                                                r"match the UID in record"):
        kube.delete_pod(api, NS, "p", uid="00000000-0000-0000-0000-000000000000")
    assert kube.delete_pod(api, NS, "p", uid=pod["metadata"]["uid"]) is True
    assert kube.delete_pod(api, NS, "p") is False
