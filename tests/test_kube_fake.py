"""FakeKube, driven by the official kubernetes client over loopback HTTP."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from fakes.kube import merge_patch, strategic_merge_patch

NS = "coder"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


@pytest.fixture
def fake(kube):
    return kube


@pytest.fixture
def api(fake, tmp_path):
    api_client = config.new_client_from_config(config_file=fake.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


def deployment(name="coder", image="ghcr.io/coder/coder:v2.16.0", annotations=None):
    labels = {"app.kubernetes.io/name": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(annotations or {})},
                "spec": {"containers": [
                    {"name": "coder", "image": image, "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "busybox"},
                ]},
            },
        },
    }


# ----------------------------------------------------------------- wiring


def test_client_talks_to_the_fake_without_touching_the_global_config(fake, core):
    core.list_namespaced_secret(NS)
    assert client.Configuration.get_default_copy().host != fake.url
    (req,) = fake.requests("GET", r"/secrets$")
    assert req.headers["authorization"] == "Bearer fake-token"


def test_discovery_answers(fake, api):
    assert client.VersionApi(api).get_code().git_version == fake.server_version
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apps", "events.k8s.io"} <= groups


def test_requests_without_a_bearer_token_are_unauthorized(fake):
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{fake.url}/api/v1/namespaces/{NS}/secrets")
    assert err.value.code == 401
    assert json.loads(err.value.read())["reason"] == "Unauthorized"


# ---------------------------------------------------------------- secrets


def test_secret_string_data_is_stored_as_base64_data_and_never_returned(fake, core):
    created = core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"password": "hunter2"}))
    assert created.data == {"password": b64("hunter2")}
    assert created.string_data is None
    assert created.type == "Opaque"
    assert created.metadata.namespace == NS and created.metadata.uid and created.metadata.creation_timestamp

    read = core.read_namespaced_secret("db", NS)
    assert read.data == {"password": b64("hunter2")}
    assert "stringData" not in fake.get_object("secrets", NS, "db")

    read.string_data = {"user": "coder"}
    replaced = core.replace_namespaced_secret("db", NS, read)
    assert replaced.data == {"password": b64("hunter2"), "user": b64("coder")}
    assert int(replaced.metadata.resource_version) > int(read.metadata.resource_version)


def test_creating_an_existing_secret_is_409_already_exists(core):
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="db"), data={"k": b64("v")})
    core.create_namespaced_secret(NS, body)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(NS, body)
    assert err.value.status == 409
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'secrets "db" already exists', "reason": "AlreadyExists",
        "details": {"name": "db", "kind": "secrets"}, "code": 409,
    }


def test_replace_with_a_stale_resource_version_is_409_conflict(core):
    core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"k": "1"}))
    mine = core.read_namespaced_secret("db", NS)
    theirs = core.read_namespaced_secret("db", NS)
    theirs.string_data = {"k": "2"}
    core.replace_namespaced_secret("db", NS, theirs)

    mine.string_data = {"k": "3"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_secret("db", NS, mine)
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on secrets "db": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert core.read_namespaced_secret("db", NS).data == {"k": b64("2")}

    mine.metadata.resource_version = None  # as in the apiserver: no resourceVersion, no precondition
    assert core.replace_namespaced_secret("db", NS, mine).data == {"k": b64("3")}


def test_missing_object_is_a_404_status(core, apps):
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("nope", NS)
    assert err.value.status == 404
    assert status_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'secrets "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "kind": "secrets"}, "code": 404,
    }
    with pytest.raises(ApiException) as err:
        apps.read_namespaced_deployment("nope", NS)
    assert status_of(err.value)["message"] == 'deployments.apps "nope" not found'
    assert status_of(err.value)["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_a_body_without_a_name_is_422_invalid(core):
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(), data={"a": "b"}))
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert body["message"] == 'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_generate_name_and_bad_label_values(core):
    made = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="run-")))
    assert made.metadata.name.startswith("run-") and len(made.metadata.name) == 9
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(
            NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x", labels={"at": "2024-01-01T00:00:00Z"})))
    assert err.value.status == 422


# ------------------------------------------------------------ deployments


def test_merge_patch_of_template_annotations_is_a_rollout(fake, apps):
    apps.create_namespaced_deployment(NS, deployment())
    patched = apps.patch_namespaced_deployment(
        "coder", NS, {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}}}}},
        _content_type="application/merge-patch+json")
    assert patched.metadata.generation == 2
    assert patched.spec.template.metadata.annotations == {"kubectl.kubernetes.io/restartedAt": "now"}
    assert patched.status.observed_generation == 2  # auto_rollout: status catches up at once
    assert [(r.name, r.generation, r.method) for r in fake.rollouts(NS)] == [("coder", 2, "PATCH")]


def test_strategic_merge_patch_merges_containers_and_env_by_name(fake, apps):
    apps.create_namespaced_deployment(NS, deployment())
    patch = {"spec": {"template": {
        "metadata": {"annotations": {"restartedAt": "t1"}},
        "spec": {"containers": [{"name": "coder", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}]},
    }}}
    patched = apps.patch_namespaced_deployment("coder", NS, patch,
                                               _content_type="application/strategic-merge-patch+json")
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"coder", "sidecar"}
    assert [(e.name, e.value) for e in containers["coder"].env] == [("A", "1"), ("B", "two"), ("C", "3")]
    assert containers["coder"].image == "ghcr.io/coder/coder:v2.16.0"
    assert patched.metadata.generation == 2

    # the same body as a merge patch replaces the whole containers list
    patched = apps.patch_namespaced_deployment("coder", NS, patch, _content_type="application/merge-patch+json")
    assert [c.name for c in patched.spec.template.spec.containers] == ["coder"]
    assert len(fake.rollouts(NS, "coder")) == 2


def test_a_dict_patch_without_content_type_is_sent_as_strategic_merge(fake, apps):
    apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment("coder", NS, {"spec": {"replicas": 0}})
    (req,) = fake.requests("PATCH")
    assert req.headers["content-type"] == "application/strategic-merge-patch+json"
    d = apps.read_namespaced_deployment("coder", NS)
    assert d.spec.replicas == 0 and d.metadata.generation == 2
    assert fake.rollouts() == []  # a spec change that is not a template change


def test_json_patch_ops(fake, apps):
    apps.create_namespaced_deployment(NS, deployment())
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "ghcr.io/coder/coder:v2.17.0"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    patched = apps.patch_namespaced_deployment("coder", NS, ops, _content_type="application/json-patch+json")
    assert [c.image for c in patched.spec.template.spec.containers] == ["ghcr.io/coder/coder:v2.17.0"]
    assert patched.metadata.annotations == {"a/b": "c"}
    assert patched.metadata.generation == 2

    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("coder", NS, [{"op": "test", "path": "/spec/replicas", "value": 5}],
                                         _content_type="application/json-patch+json")
    assert err.value.status == 422


def test_unknown_patch_type_is_415(core):
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("c", NS, {"data": {"a": "b"}}, _content_type="application/apply-patch+yaml")
    assert err.value.status == 415
    assert status_of(err.value)["reason"] == "UnsupportedMediaType"


def test_status_changes_through_the_main_resource_are_ignored_and_scale_works(fake, apps):
    apps.create_namespaced_deployment(NS, deployment())
    apps.patch_namespaced_deployment("coder", NS, {"status": {"replicas": 99}},
                                     _content_type="application/merge-patch+json")
    assert apps.read_namespaced_deployment("coder", NS).status.replicas == 2
    scale = apps.patch_namespaced_deployment_scale("coder", NS, {"spec": {"replicas": 0}},
                                                   _content_type="application/merge-patch+json")
    assert scale.spec.replicas == 0
    assert fake.get_object("deployments", NS, "coder")["spec"]["replicas"] == 0


def test_no_op_update_keeps_the_resource_version(apps):
    created = apps.create_namespaced_deployment(NS, deployment())
    same = apps.replace_namespaced_deployment("coder", NS, created)
    assert same.metadata.resource_version == created.metadata.resource_version
    assert same.metadata.generation == 1


# ------------------------------------------------------------------ lists


def test_label_selectors_and_pagination(fake, core):
    for name, labels in [
        ("a", {"app": "coder", "tier": "web"}),
        ("b", {"app": "coder", "tier": "db"}),
        ("c", {"app": "other"}),
        ("d", {"app": "coder", "tier": "cache", "canary": "yes"}),
        ("e", {}),
    ]:
        fake.put("configmaps", NS, {"metadata": {"name": name, "labels": labels}})
    fake.put("configmaps", "elsewhere", {"metadata": {"name": "z", "labels": {"app": "coder"}}})

    def names(selector, **kw):
        return [i.metadata.name for i in core.list_namespaced_config_map(NS, label_selector=selector, **kw).items]

    assert names("app=coder") == ["a", "b", "d"]
    assert names("app==coder,tier!=db") == ["a", "d"]
    assert names("tier!=db") == ["a", "c", "d", "e"]  # != also matches a missing key
    assert names("canary") == ["d"]
    assert names("!tier") == ["c", "e"]
    assert names("tier in (web,db)") == ["a", "b"]
    assert names("tier notin (web, db)") == ["c", "d", "e"]
    assert names("app=coder,tier in (web,cache),!canary") == ["a"]
    assert [i.metadata.name for i in core.list_namespaced_config_map(NS, field_selector="metadata.name=b").items] == ["b"]
    assert [i.metadata.name for i in core.list_config_map_for_all_namespaces(label_selector="app=coder").items] == ["a", "b", "d", "z"]

    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(NS, label_selector="app", limit=2, _continue=token)
        seen += [i.metadata.name for i in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert seen == ["a", "b", "c", "d"] and pages == 2

    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(NS, label_selector="tier in web")
    assert err.value.status == 400


def test_list_envelope(fake, core):
    fake.put("secrets", NS, {"metadata": {"name": "s1"}, "stringData": {"k": "v"}})
    fake.put("secrets", NS, {"metadata": {"name": "s2"}})
    resp = core.api_client.call_api(
        "GET", f"{fake.url}/api/v1/namespaces/{NS}/secrets?limit=1",
        header_params={"Authorization": "Bearer t"})
    resp.read()
    body = json.loads(resp.data)
    assert body["kind"] == "SecretList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == str(fake.resource_version)
    assert body["metadata"]["continue"] and body["metadata"]["remainingItemCount"] == 1
    assert body["items"][0]["data"] == {"k": b64("v")}


# ------------------------------------------------------- events and pods


def test_events_core_and_events_k8s_io_share_one_store(fake, api):
    core = client.CoreV1Api(api)
    events = client.EventsV1Api(api)
    core.create_namespaced_event(NS, client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="e1"),
        involved_object=client.V1ObjectReference(kind="Deployment", name="coder", namespace=NS),
        reason="Restarted", message="restarted by job", type="Normal"))
    events.create_namespaced_event(NS, client.EventsV1Event(
        metadata=client.V1ObjectMeta(generate_name="coder-jobs-"),
        event_time="2024-01-01T00:00:00.000000Z", action="Restart", reason="Restarted",
        reporting_controller="coder-jobs", reporting_instance="job-1", type="Normal",
        regarding=client.V1ObjectReference(kind="Deployment", name="coder", namespace=NS), note="via events.k8s.io"))

    assert sorted(e.message for e in core.list_namespaced_event(NS).items) == ["restarted by job", "via events.k8s.io"]
    v1 = events.list_namespaced_event(NS, field_selector="reportingComponent=coder-jobs").items
    assert len(v1) == 1 and v1[0].note == "via events.k8s.io" and v1[0].regarding.name == "coder"
    # The apiserver shows a core event without eventTime as "eventTime": null through
    # events.k8s.io/v1, and the client's model then refuses it (as against a real cluster).
    with pytest.raises(ValueError, match="eventTime"):
        events.list_namespaced_event(NS, field_selector="metadata.name=e1")
    assert [e["reason"] for e in fake.objects("events", NS)] == ["Restarted", "Restarted"]

    with pytest.raises(ApiException) as err:  # events.k8s.io requires the reporting fields
        events.create_namespaced_event(NS, client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="bad"), event_time="2024-01-01T00:00:00.000000Z"))
    assert err.value.status == 422


def test_pod_delete_returns_the_pod(fake, core):
    fake.put("pods", NS, {"metadata": {"name": "coder-0"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    deleted = core.delete_namespaced_pod("coder-0", NS)
    assert deleted.metadata.name == "coder-0" and deleted.metadata.deletion_timestamp is not None
    assert fake.get_object("pods", NS, "coder-0") is None
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("coder-0", NS)
    assert err.value.status == 404


def test_secret_delete_returns_a_success_status(fake, core):
    fake.put("secrets", NS, {"metadata": {"name": "db"}})
    status = core.delete_namespaced_secret("db", NS)  # client v37 types this as a plain dict
    assert status["status"] == "Success" and status["details"]["name"] == "db"
    assert fake.objects("secrets") == []


# ---------------------------------------------------- log and fault knobs


def test_request_log_counts_writes(fake, core):
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c")))
    core.read_namespaced_config_map("c", NS)
    core.patch_namespaced_config_map("c", NS, {"data": {"a": "b"}})
    core.delete_namespaced_config_map("c", NS)
    assert [w.method for w in fake.writes()] == ["POST", "PATCH", "DELETE"]
    assert len(fake.api_writes("configmaps", "c")) == 2  # PATCH and DELETE name the object; POST does not
    assert all(r.headers["authorization"] == "Bearer fake-token" for r in fake.log)


def test_conflict_next_simulates_a_concurrent_writer(fake, core):
    core.create_namespaced_secret(NS, client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"k": "1"}))
    fake.conflict_next("secrets", "db", n=2)
    fresh = core.read_namespaced_secret("db", NS)

    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.patch_namespaced_secret("db", NS, {"stringData": {"k": "2"}})
        assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"

    again = core.read_namespaced_secret("db", NS)
    assert again.metadata.annotations == {"fake/touched": "2"}
    assert int(again.metadata.resource_version) > int(fresh.metadata.resource_version)
    again.string_data = {"k": "3"}
    assert core.replace_namespaced_secret("db", NS, again).data == {"k": b64("3")}


def test_fail_next_answers_a_status_failure(fake, core):
    fake.fail_next(500, n=1, path_regex=r"/secrets")
    with pytest.raises(ApiException) as err:
        core.list_namespaced_secret(NS)
    assert err.value.status == 500 and status_of(err.value)["reason"] == "InternalError"
    assert core.list_namespaced_secret(NS).items == []


def test_urllib3_silently_retries_a_503_with_retry_after_on_reads(fake, core):
    fake.fail_next(503, n=1, path_regex=r"/secrets", method="GET")
    assert core.list_namespaced_secret(NS).items == []
    assert [r.status for r in fake.requests("GET", r"/secrets$")] == [503, 200]


# ------------------------------------------------------------ pure patches


def test_merge_patch_rfc7386_examples():
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


def test_strategic_merge_patch_directives():
    orig = {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}],
                     "tolerations": [{"key": "x"}]},
            "metadata": {"finalizers": ["f1"]}}
    out = strategic_merge_patch(orig, {
        "spec": {"containers": [{"name": "b", "$patch": "delete"}], "tolerations": [{"key": "y"}]},
        "metadata": {"finalizers": ["f2"]},
    })
    assert out == {"spec": {"containers": [{"name": "a", "image": "1"}], "tolerations": [{"key": "y"}]},
                   "metadata": {"finalizers": ["f1", "f2"]}}
    assert strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}) == {"spec": {"c": 3}}
