"""sync-external-auth: end to end (the CLI in a subprocess against the real kube-apiserver, through
the fault proxy) and the pure parts."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.errors import ConfigError
from jobs.sync_external_auth import (
    CHECKSUM_ANNOTATION,
    DEPLOYMENT_ANNOTATION,
    KEY_CLIENT_ID,
    KEY_CLIENT_SECRET,
    KEY_ID,
    KEY_TYPE,
    MANAGED_LABELS,
    ROLLOUT_PENDING_ANNOTATION,
    DeploymentState,
    SourcesMissing,
    TargetState,
    checksum,
    desired_data,
    event_for,
    plan,
    rollout_step,
    secret_step,
    source_value,
)
from tests.conftest import CANARY_CLIENT_SECRET, assert_no_secret, run_job
from tests.kube.cluster import JOBS, Cluster

NS = "coder"
ID_SECRET = "coder-github-oauth-client-id"
SECRET_SECRET = "coder-github-oauth-client-secret"
TARGET = "coder-external-auth-github"
CLIENT_ID = "Iv1.8a61f9b3a7aba766"
CLIENT_SECRET = "0123456789abcdef0123456789abcdef01234567"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def decoded(obj: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


@pytest.fixture
def fake(kube):
    return kube


@pytest.fixture
def env(fake, tmp_path):
    return {"KUBECONFIG": fake.kubeconfig(tmp_path / "kc", namespace=NS), "POD_NAMESPACE": NS, "CODER_DEPLOYMENT": "coder"}


def seed_source(fake: Cluster, name: str, data: dict[str, str] | None) -> None:
    if data is None:
        fake.delete_object("secret", NS, name)
    else:
        fake.put("secret", NS, {"metadata": {"name": name}, "data": {k: b64(v) for k, v in data.items()}})


def seed_deployment(fake: Cluster, name: str = "coder") -> None:
    labels = {"app.kubernetes.io/name": name}
    fake.put("deployment", NS, {
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "coder", "image": "ghcr.io/coder/coder:v2.16.0",
                                                       "envFrom": [{"secretRef": {"name": TARGET}}]}]}}}})


@pytest.fixture
def seeded(fake):
    seed_source(fake, ID_SECRET, {"value": CLIENT_ID + "\n"})  # External Secrets often add a newline
    seed_source(fake, SECRET_SECRET, {"value": CLIENT_SECRET + "\r\n"})
    seed_deployment(fake)
    return fake


def sync(env: dict, *args: str):
    return run_job("sync-external-auth", *args, env=env)


def target(fake: Cluster) -> dict | None:
    return fake.get_object("secret", NS, TARGET)


def template_annotations(fake: Cluster) -> dict:
    return fake.get_object("deployment", NS, "coder")["spec"]["template"]["metadata"].get("annotations") or {}


def events(fake: Cluster) -> list[dict]:
    return fake.objects("event", NS)


def expected(client_secret: str = CLIENT_SECRET) -> dict[str, str]:
    return {KEY_ID: "github", KEY_TYPE: "github", KEY_CLIENT_ID: CLIENT_ID, KEY_CLIENT_SECRET: client_secret}


# ------------------------------------------------------------------ end to end


def test_first_run_creates_the_target_then_a_second_run_is_a_three_request_noop(seeded, env):
    r = sync(env)
    assert r.rc == 0, r.output
    t = target(seeded)
    assert decoded(t) == expected()
    assert t["metadata"]["labels"] == MANAGED_LABELS
    assert t["metadata"]["annotations"] == {CHECKSUM_ANNOTATION: checksum(expected())}  # rollout marker cleared
    assert template_annotations(seeded)[DEPLOYMENT_ANNOTATION] == checksum(expected())
    assert len(seeded.rollouts(NS, "coder")) == 1
    (ev,) = events(seeded)
    assert ev["reason"] == "ExternalAuthSecretCreated" and ev["involvedObject"]["name"] == TARGET
    assert ev["involvedObject"]["uid"] == t["metadata"]["uid"]
    assert KEY_CLIENT_SECRET in ev["message"] and checksum(expected())[:19] in ev["message"]

    seeded.clear_log()
    r = sync(env)
    assert r.rc == 0, r.output
    audited = seeded.audit(JOBS)  # the API server's own count, not only what the proxy forwarded
    assert [(e["verb"], e["objectRef"]["resource"], e["objectRef"]["name"], e["responseStatus"]["code"])
            for e in audited] == [("get", "secrets", ID_SECRET, 200), ("get", "secrets", SECRET_SECRET, 200),
                                  ("get", "secrets", TARGET, 200)]
    assert seeded.writes() == []
    assert [(q.method, q.path.rsplit("/", 1)[-1]) for q in seeded.requests()] == [
        ("GET", ID_SECRET), ("GET", SECRET_SECRET), ("GET", TARGET)]
    assert len(seeded.rollouts()) == 1 and len(events(seeded)) == 1
    (plan_event,) = r.find("plan")
    assert plan_event["writes"] == 0 and plan_event["actions"][0]["action"] == "nothing"


def test_rotating_the_client_secret_updates_the_target_and_rolls_coderd_once(seeded, env):
    assert sync(env).rc == 0
    seed_source(seeded, SECRET_SECRET, {"value": "fedcba9876543210fedcba9876543210fedcba98"})
    seeded.clear_log()
    r = sync(env)
    assert r.rc == 0, r.output
    t = target(seeded)
    assert decoded(t) == expected("fedcba9876543210fedcba9876543210fedcba98")
    new_sum = checksum(decoded(t))
    assert t["metadata"]["annotations"] == {CHECKSUM_ANNOTATION: new_sum}
    assert [w.method for w in seeded.writes(r"/deployments/")] == ["PATCH"]
    assert template_annotations(seeded)[DEPLOYMENT_ANNOTATION] == new_sum
    assert len(seeded.rollouts(NS, "coder")) == 2
    puts = seeded.writes(rf"/secrets/{TARGET}$")
    assert puts and all(p.method == "PUT" and p.json()["metadata"]["resourceVersion"] for p in puts)
    updated = [e for e in events(seeded) if e["reason"] == "ExternalAuthSecretUpdated"]
    assert len(updated) == 1 and KEY_CLIENT_SECRET in updated[0]["message"] and KEY_CLIENT_ID not in updated[0]["message"]

    seeded.clear_log()
    assert sync(env).rc == 0
    assert seeded.writes() == [] and len(seeded.rollouts()) == 2


def test_without_coder_deployment_nothing_is_rolled(seeded, env):
    env = {k: v for k, v in env.items() if k != "CODER_DEPLOYMENT"}
    assert sync(env).rc == 0
    assert seeded.requests(path_regex="deployments") == [] and DEPLOYMENT_ANNOTATION not in template_annotations(seeded)
    assert target(seeded)["metadata"]["annotations"] == {CHECKSUM_ANNOTATION: checksum(expected())}


def test_missing_deployment_warns_and_still_converges(seeded, env):
    seeded.delete_object("deployment", NS, "coder")
    r = sync(env)
    assert r.rc == 0, r.output
    (warning,) = [e for e in r.events if e.get("level") == "warning"]
    assert "not found" in warning["event"] and "reads the Secret when it starts" in warning["event"]
    assert target(seeded)["metadata"]["annotations"] == {CHECKSUM_ANNOTATION: checksum(expected())}
    seeded.clear_log()
    assert sync(env).rc == 0 and seeded.writes() == []


def test_a_failed_rollout_is_finished_by_the_next_run(seeded, env):
    seeded.fail_next(500, n=1, path_regex=r"/deployments/coder$", method="PATCH")
    r = sync(env)
    assert r.rc == 1 and "HTTP 500" in r.errors()[0]["event"] and "Deployment coder/coder" in r.errors()[0]["event"]
    assert target(seeded)["metadata"]["annotations"][ROLLOUT_PENDING_ANNOTATION] == checksum(expected())
    assert seeded.rollouts() == []

    seeded.clear_log()
    r = sync(env)
    assert r.rc == 0, r.output
    assert [a["action"] for a in r.find("plan")[0]["actions"]] == ["nothing", "roll-deployment"]
    assert len(seeded.rollouts()) == 1 and template_annotations(seeded)[DEPLOYMENT_ANNOTATION] == checksum(expected())
    assert ROLLOUT_PENDING_ANNOTATION not in target(seeded)["metadata"]["annotations"]
    assert len(events(seeded)) == 1  # the Secret did not change again

    seeded.clear_log()
    assert sync(env).rc == 0 and seeded.writes() == []


@pytest.mark.parametrize("case", ["empty", "ambiguous", "unmanaged", "no-data", "two-lines"])
def test_bad_input_exits_2_names_the_secret_and_leaves_the_target_alone(seeded, env, case):
    if case == "unmanaged":
        seeded.put("secret", NS, {"metadata": {"name": TARGET, "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                                  "data": {"SOMETHING": b64("else")}})
        culprit = TARGET
    else:
        assert sync(env).rc == 0  # a converged managed target that must stay as it is
        culprit = SECRET_SECRET
        seed_source(seeded, SECRET_SECRET, {
            "empty": {"value": "\n"}, "no-data": {},
            "ambiguous": {"client-secret": CANARY_CLIENT_SECRET, "other": "x-other-value"},
            "two-lines": {"value": CANARY_CLIENT_SECRET + "\n\n"},
        }[case])
    before = target(seeded)
    rollouts = len(seeded.rollouts())
    seeded.clear_log()
    r = sync(env)
    assert r.rc == 2, r.output
    (err,) = r.errors()
    assert f"{NS}/{culprit}" in err["event"]
    assert {"empty": "is empty", "ambiguous": "ambiguous", "no-data": "no data",
            "two-lines": "several lines", "unmanaged": "not managed by coder-jobs"}[case] in err["event"]
    if case == "unmanaged":
        assert "'Helm'" in err["event"] and "--adopt" in err["event"]
    assert seeded.writes() == []
    assert target(seeded) == before and len(seeded.rollouts()) == rollouts
    assert_no_secret(r, CANARY_CLIENT_SECRET)


def test_both_missing_sources_are_waited_for_then_named_with_exit_1(fake, env):
    """Missing is "not delivered yet", never bad input: past the wait it is exit 1 (retried by the
    Job's backoffLimit and the next sync), not the exit 2 the chart's podFailurePolicy ends at once."""
    r = sync({**env, "EXTERNAL_AUTH_SOURCE_TIMEOUT": "0"})
    assert r.rc == 1, r.output
    (err,) = r.errors()
    assert ID_SECRET in err["event"] and SECRET_SECRET in err["event"] and "not exist yet" in err["event"]
    assert "RUNBOOK section 8" in err["event"]
    assert fake.writes() == []  # the target is not even read


def test_a_malformed_source_is_exit_2_at_once_even_while_the_other_is_missing(fake, env):
    seed_source(fake, ID_SECRET, {"value": "\n"})
    r = sync({**env, "EXTERNAL_AUTH_SOURCE_TIMEOUT": "600"})
    assert r.rc == 2, r.output
    (err,) = r.errors()
    assert f"{NS}/{ID_SECRET}: key `value` is empty" in err["event"] and f"{NS}/{SECRET_SECRET} does not exist" in err["event"]
    assert fake.writes() == [] and len(fake.requests()) == 2


def test_sources_that_appear_while_the_job_waits_are_used(fake, env):
    """A recreated cluster: the PreSync hook starts before External Secrets delivered the sources."""
    from tests.test_faults_common import start_job, wait_until

    seed_deployment(fake)
    job = start_job("sync-external-auth", env={**env, "EXTERNAL_AUTH_SOURCE_TIMEOUT": "120"})
    try:
        wait_until(lambda: len(fake.requests("GET", rf"/secrets/{SECRET_SECRET}$")) >= 2, timeout=60,
                   what="the job to look for the missing Secret twice")
        seed_source(fake, ID_SECRET, {"value": CLIENT_ID})
        seed_source(fake, SECRET_SECRET, {"value": CLIENT_SECRET})
        out, err = job.communicate(timeout=120)
    finally:
        if job.returncode is None:
            job.kill()
    assert job.returncode == 0, out + err
    assert decoded(target(fake)) == expected()
    assert "waiting for the source Secrets" in out


def test_adopt_takes_over_an_unmanaged_target(seeded, env):
    seeded.put("secret", NS, {"metadata": {"name": TARGET, "labels": {"team": "platform"},
                                           "annotations": {"note": "hand-made"}},
                              "data": {KEY_CLIENT_ID: b64("old-id"), "LEFTOVER": b64("x")}})
    assert sync(env).rc == 2
    r = sync(env, "--adopt")
    assert r.rc == 0, r.output
    t = target(seeded)
    assert decoded(t) == expected()
    assert t["metadata"]["labels"] == {"team": "platform", **MANAGED_LABELS}
    assert t["metadata"]["annotations"] == {"note": "hand-made", CHECKSUM_ANNOTATION: checksum(expected())}
    (ev,) = events(seeded)
    assert ev["reason"] == "ExternalAuthSecretAdopted" and "LEFTOVER" in ev["message"]
    assert len(seeded.rollouts()) == 1
    seeded.clear_log()
    assert sync(env).rc == 0 and seeded.writes() == []  # managed now: no --adopt needed


@pytest.mark.parametrize(("spoil", "status", "reason"), [
    (lambda b: b.update(eventTime=b["eventTime"][:19] + "Z"), 400, "BadRequest"),  # no microseconds
    (lambda b: [b.pop(k) for k in ("reportingComponent", "reportingInstance", "action")], 422, "Invalid"),
], ids=["eventTime-without-microseconds", "eventTime-without-reporting-fields"])
def test_an_event_the_real_server_refuses_is_a_warning_and_the_sync_still_converges(seeded, env, spoil, status, reason):
    def spoil_event(request):  # the job's Event, changed on its way into what the real server refuses
        if request.method == "POST" and request.path.endswith("/events"):
            body = json.loads(request.body)
            spoil(body)
            request.body = json.dumps(body).encode()

    seeded.proxy.before_forward.append(spoil_event)
    r = sync(env)
    assert r.rc == 0, r.output
    (posted,) = seeded.requests("POST", r"/events$")
    assert posted.status == status and posted.response["reason"] == reason
    (warning,) = [e for e in r.events if e.get("level") == "warning"]
    assert "could not record an Event" in warning["event"] and f"HTTP {status} {reason}" in warning["error"]
    assert events(seeded) == [] and decoded(target(seeded)) == expected() and len(seeded.rollouts()) == 1
    assert ROLLOUT_PENDING_ANNOTATION not in target(seeded)["metadata"]["annotations"]


def test_conflict_on_update_rereads_and_converges(seeded, env):
    assert sync(env).rc == 0
    seed_source(seeded, SECRET_SECRET, {"value": "fedcba9876543210fedcba9876543210fedcba98"})
    seeded.conflict_next("secret", TARGET, n=2)
    seeded.clear_log()
    r = sync(env)
    assert r.rc == 0, r.output
    assert len(r.find("changed since we read it")) == 2
    assert decoded(target(seeded)) == expected("fedcba9876543210fedcba9876543210fedcba98")
    assert target(seeded)["metadata"]["annotations"]["test/touched"] == "2"  # the other writer's change survives
    assert [w.status for w in seeded.writes(rf"/secrets/{TARGET}$")][:3] == [409, 409, 200]
    assert len(seeded.writes(r"/deployments/")) == 1
    assert len([e for e in events(seeded) if e["reason"] == "ExternalAuthSecretUpdated"]) == 1


def test_endless_conflicts_exit_1(seeded, env):
    assert sync(env).rc == 0
    seed_source(seeded, SECRET_SECRET, {"value": "fedcba9876543210fedcba9876543210fedcba98"})
    seeded.conflict_next("secret", TARGET, n=100)
    r = sync(env)
    assert r.rc == 1 and "kept changing" in r.errors()[0]["event"]


def test_server_error_reading_the_target_exits_1_with_the_cause(seeded, env):
    seeded.fail_next(500, n=50, path_regex=rf"/secrets/{TARGET}$")
    r = sync(env)
    assert r.rc == 1, r.output
    (err,) = r.errors()
    assert f"read Secret {NS}/{TARGET}: HTTP 500 InternalError" in err["event"]
    assert seeded.writes() == []


def test_dry_run_writes_nothing_and_prints_the_plan(seeded, env):
    r = sync(env, "--dry-run")
    assert r.rc == 0, r.output
    assert seeded.writes() == [] and target(seeded) is None
    (p,) = r.find("plan")
    assert p["dry_run"] is True and [a["action"] for a in p["actions"]] == ["create-secret", "roll-deployment"]
    console = run_job("sync-external-auth", "--dry-run", env=env, log_format="console")
    assert "would create-secret secret/coder/coder-external-auth-github" in console.stdout
    assert_no_secret(r, CLIENT_SECRET)


def test_the_canary_client_secret_never_leaks(seeded, env):
    seed_source(seeded, SECRET_SECRET, {"value": CANARY_CLIENT_SECRET + "\n"})
    results = [sync(env), sync(env), run_job("sync-external-auth", env=env, log_format="console")]
    seed_source(seeded, SECRET_SECRET, {"value": CANARY_CLIENT_SECRET + "-rotated"})
    seeded.conflict_next("secret", TARGET)
    results += [sync(env, "--dry-run"), sync(env)]
    seeded.fail_next(422, n=1, method="PUT")  # an error path after the values were read
    seed_source(seeded, SECRET_SECRET, {"value": CANARY_CLIENT_SECRET})
    results.append(sync(env))
    assert [r.rc for r in results] == [0, 0, 0, 0, 0, 1]
    assert decoded(target(seeded))[KEY_CLIENT_SECRET] == CANARY_CLIENT_SECRET + "-rotated"
    b64_canary = b64(CANARY_CLIENT_SECRET)[:24]
    for r in results:
        assert_no_secret(r, CANARY_CLIENT_SECRET, b64_canary)
    assert CANARY_CLIENT_SECRET not in json.dumps(events(seeded)) and b64_canary not in json.dumps(events(seeded))
    for kind in ("secret", "deployment", "event", "configmap", "pod"):
        for obj in seeded.objects(kind):
            meta = json.dumps([obj["metadata"].get("annotations"), obj["metadata"].get("labels"),
                               ((obj.get("spec") or {}).get("template") or {}).get("metadata")])
            assert CANARY_CLIENT_SECRET not in meta and b64_canary not in meta


# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(("data", "value"), [
    ({"value": b"abc\n"}, "abc"),
    ({"value": b"abc\r\n"}, "abc"),
    ({"value": b"abc"}, "abc"),
    ({"client-id": b"abc\n"}, "abc"),
    ({"value": b"abc", "other": b"zzz"}, "abc"),
])
def test_source_value(data, value):
    assert source_value("ns/s", data) == value


def test_a_source_that_does_not_exist_is_missing_not_bad_input():
    with pytest.raises(SourcesMissing) as exc:
        source_value("coder/src", None)
    assert exc.value.names == ["coder/src"] and not isinstance(exc.value, ConfigError)


@pytest.mark.parametrize(("data", "problem"), [
    ({}, "no data"),
    ({"a": b"1", "b": b"2"}, "ambiguous: keys a, b"),
    ({"value": b""}, "is empty"),
    ({"value": b"\n"}, "is empty"),
    ({"value": b"  \t\n"}, "is empty"),
    ({"value": b"abc\n\n"}, "several lines"),
    ({"value": b"a\nb"}, "several lines"),
    ({"value": b" abc"}, "whitespace"),
    ({"value": b"\xff\xfe"}, "not UTF-8"),
])
def test_source_value_problems_name_the_secret(data, problem):
    with pytest.raises(ConfigError) as exc:
        source_value("coder/src", data)
    assert "coder/src" in str(exc.value) and problem in str(exc.value)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1)
       .filter(lambda s: s.strip() == s and s))
def test_source_value_trims_exactly_one_newline(value):
    assert source_value("s", {"value": (value + "\n").encode()}) == value
    assert source_value("s", {"only": (value + "\r\n").encode()}) == value


def test_checksum_is_a_stable_hash_and_never_a_value():
    a = desired_data("github", CLIENT_ID, CLIENT_SECRET)
    assert checksum(a) == checksum(dict(reversed(list(a.items()))))
    assert checksum(a).startswith("sha256:") and len(checksum(a)) == 7 + 64
    assert CLIENT_SECRET not in checksum(a) and CLIENT_ID not in checksum(a)
    assert checksum(a) != checksum(desired_data("github", CLIENT_ID, CLIENT_SECRET + "x"))


DATA = desired_data("github", CLIENT_ID, CLIENT_SECRET)
SUM = checksum(DATA)


def state(data=None, labels=None, annotations=None) -> TargetState:
    data = DATA if data is None else data
    return TargetState(TARGET, {k: v.encode() for k, v in data.items()},
                       dict(MANAGED_LABELS if labels is None else labels),
                       {CHECKSUM_ANNOTATION: SUM} if annotations is None else annotations, "7")


def test_plan_create_and_nothing():
    p = plan(None, DATA, namespace=NS, name=TARGET, deployment="coder")
    step = secret_step(p)
    assert (step.change, rollout_step(p) is not None, step.annotations[ROLLOUT_PENDING_ANNOTATION]) == ("create", True, SUM)
    assert [a.kind for a in p.actions] == ["create-secret", "roll-deployment"]
    p = plan(state(), DATA, namespace=NS, name=TARGET, deployment="coder")
    assert (secret_step(p).change, rollout_step(p) is not None, [a.kind for a in p.actions]) == ("nothing", False, ["nothing"])
    assert not any(a.writes for a in p.actions)


def test_plan_update_on_a_changed_value_names_only_keys():
    new = desired_data("github", CLIENT_ID, "another-secret-value-123456")
    p = plan(state(), new, namespace=NS, name=TARGET, deployment="coder")
    step = secret_step(p)
    assert (step.change, rollout_step(p) is not None, step.changed_keys) == ("update", True, (KEY_CLIENT_SECRET,))
    assert step.annotations == {CHECKSUM_ANNOTATION: checksum(new), ROLLOUT_PENDING_ANNOTATION: checksum(new)}
    rendered = json.dumps([a.as_dict() for a in p.actions]) + json.dumps(event_for(secret_step(p), TARGET))
    assert "another-secret-value" not in rendered and CLIENT_SECRET not in rendered
    assert event_for(secret_step(p), TARGET)[0] == "ExternalAuthSecretUpdated"


def test_plan_metadata_only_updates_do_not_roll():
    p = plan(state(labels={"app.kubernetes.io/managed-by": "coder-jobs"}), DATA,
             namespace=NS, name=TARGET, deployment="coder")
    assert (secret_step(p).change, rollout_step(p) is not None, secret_step(p).changed_keys) == ("update", False, ())
    p = plan(state(annotations={}), DATA, namespace=NS, name=TARGET, deployment="coder")
    assert (secret_step(p).change, rollout_step(p) is not None) == ("update", False)


def test_plan_removes_extra_keys():
    p = plan(state(data={**DATA, "EXTRA": "x"}), DATA, namespace=NS, name=TARGET)
    assert secret_step(p).change == "update" and secret_step(p).changed_keys == ("EXTRA",)
    assert rollout_step(p) is None  # no Deployment configured


def test_plan_refuses_an_unmanaged_target_unless_adopting():
    with pytest.raises(ConfigError, match="has no app.kubernetes.io/managed-by label"):
        plan(state(labels={}), DATA, namespace=NS, name=TARGET)
    p = plan(state(labels={"x": "y"}), DATA, namespace=NS, name=TARGET, adopt=True, deployment="coder")
    assert (secret_step(p).change, rollout_step(p) is not None) == ("adopt", False)  # same values: coderd has nothing new to read
    assert secret_step(p).labels == {"x": "y", **MANAGED_LABELS}
    assert event_for(secret_step(p), TARGET)[0] == "ExternalAuthSecretAdopted"


def test_plan_finishes_an_interrupted_rollout():
    pending = {CHECKSUM_ANNOTATION: SUM, ROLLOUT_PENDING_ANNOTATION: SUM}
    p = plan(state(annotations=pending), DATA, namespace=NS, name=TARGET, deployment="coder")
    assert (secret_step(p).change, rollout_step(p) is not None) == ("nothing", True)
    p = plan(state(annotations=pending), DATA, namespace=NS, name=TARGET, deployment=None)
    assert (secret_step(p).change, rollout_step(p) is not None) == ("nothing", False)  # nothing to roll: the marker is left alone


def test_plan_patches_only_a_deployment_that_lacks_the_checksum():
    """The Deployment as observed decides the patch; the marker is cleared whichever way."""
    pending = {CHECKSUM_ANNOTATION: SUM, ROLLOUT_PENDING_ANNOTATION: SUM}
    for observed, patch, found in ((DeploymentState(True, "sha256:old"), True, True),
                                   (DeploymentState(True, SUM), False, True),  # a run cut short after its patch
                                   (DeploymentState(False), False, False)):
        p = plan(state(annotations=pending), DATA, namespace=NS, name=TARGET, deployment="coder",
                 deployment_state=observed)
        roll = rollout_step(p)
        assert [a.kind for a in p] == ["nothing", "roll-deployment"]
        assert (roll.patch, roll.found, roll.checksum) == (patch, found, SUM)
