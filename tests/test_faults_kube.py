"""Fault injection for sync-external-auth against the real Kubernetes API server, through the
fault proxy (refused connections, 503, 5xx, latency, resets, 429: all counted in requests).

State invariants after every faulty run: the two source Secrets are untouched, nothing is
ever deleted, and the target Secret is either as it was before the run or complete with the
new values (never half-written: a Secret write is one object). The run after the fault
(without it) converges: target current, coderd's Deployment carries the new checksum, the
rollout-pending marker is gone.

Decision under 30% random 5xx: exit 0 or 1. Reads are retried (4 attempts with backoff);
writes are conditional (create -> 409 AlreadyExists, update -> resourceVersion) and are not
repeated blindly: a 5xx on a write ends the run with exit 1 and the next run (the next Argo
CD sync) converges. If the Secret was written but the Deployment patch failed, the
`rollout-pending` marker makes the next run roll coderd even though the Secret is current.
"""

from __future__ import annotations

import base64
import threading

import pytest

from jobs.kube import READ_ATTEMPTS
from jobs.sync_external_auth import (
    CHECKSUM_ANNOTATION,
    DEPLOYMENT_ANNOTATION,
    KEY_CLIENT_ID,
    KEY_CLIENT_SECRET,
    KEY_ID,
    KEY_TYPE,
    ROLLOUT_PENDING_ANNOTATION,
    checksum,
)
from tests.conftest import CANARY_CLIENT_SECRET, assert_no_secret, run_job
from tests.kube.cluster import Cluster
from tests.test_faults_common import (
    assert_clean_failure,
    assert_no_traceback,
    down_at_start,
    gaps_after_429,
    record_hook,
    start_job,
    terminate,
    wait_until,
)

NS = "coder"
ID_SECRET = "coder-github-oauth-client-id"
SECRET_SECRET = "coder-github-oauth-client-secret"
TARGET = "coder-external-auth-github"
CLIENT_ID = "Iv1.8a61f9b3a7aba766"
OLD_SECRET = "0123456789abcdef0123456789abcdef01234567"
NEW_SECRET = CANARY_CLIENT_SECRET
TARGET_PATH = rf"^/api/v1/namespaces/{NS}/secrets/{TARGET}$"
CREATE_PATH = rf"^/api/v1/namespaces/{NS}/secrets$"
DEPLOYMENT_PATH = rf"^/apis/apps/v1/namespaces/{NS}/deployments/coder$"
EVENTS_PATH = rf"^/api/v1/namespaces/{NS}/events$"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def values(client_secret: str) -> dict[str, str]:
    return {KEY_ID: "github", KEY_TYPE: "github", KEY_CLIENT_ID: CLIENT_ID, KEY_CLIENT_SECRET: client_secret}


@pytest.fixture
def kube(kube):
    """The real API server (emptied, no faults), with the two sources and coderd's Deployment."""
    set_source(kube, ID_SECRET, CLIENT_ID + "\n")
    set_source(kube, SECRET_SECRET, OLD_SECRET + "\n")
    labels = {"app.kubernetes.io/name": "coder"}
    kube.put("deployment", NS, {
        "metadata": {"name": "coder", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "coder", "image": "ghcr.io/coder/coder:v2.22.0",
                                                       "envFrom": [{"secretRef": {"name": TARGET}}]}]}}}})
    kube.clear_log()
    yield kube
    kube.clear_faults()


@pytest.fixture
def env(kube, tmp_path):
    return {"KUBECONFIG": kube.kubeconfig(tmp_path / "kubeconfig", namespace=NS), "POD_NAMESPACE": NS,
            "CODER_DEPLOYMENT": "coder"}


def set_source(fake: Cluster, name: str, value: str) -> None:
    fake.put("secret", NS, {"metadata": {"name": name}, "data": {"value": b64(value)}})


def target(fake: Cluster) -> dict | None:
    return fake.get_object("secret", NS, TARGET)


def target_values(fake: Cluster) -> dict[str, str] | None:
    t = target(fake)
    return None if t is None else {k: base64.b64decode(v).decode() for k, v in (t.get("data") or {}).items()}


def rolled_checksum(fake: Cluster) -> str | None:
    dep = fake.get_object("deployment", NS, "coder")
    return (dep["spec"]["template"]["metadata"].get("annotations") or {}).get(DEPLOYMENT_ANNOTATION)


def sync(env: dict, **kw):
    return run_job("sync-external-auth", env=env, **kw)


def rotate(fake: Cluster, env: dict) -> None:
    """Converge on the old client secret, then rotate it in the source: the next run must update."""
    first = sync(env)
    assert first.rc == 0, first.output
    set_source(fake, SECRET_SECRET, NEW_SECRET + "\n")
    fake.clear_log()


def assert_safe(fake: Cluster, before: dict[str, str] | None, after: dict[str, str]) -> None:
    """Sources intact, nothing deleted, target either untouched or completely new."""
    assert base64.b64decode(fake.get_object("secret", NS, SECRET_SECRET)["data"]["value"]).decode().strip() in (
        OLD_SECRET, NEW_SECRET)
    assert fake.get_object("secret", NS, ID_SECRET) is not None
    assert [r for r in fake.log if r.method == "DELETE"] == []
    now = target_values(fake)
    assert now in (before, after), now


def assert_converged(fake: Cluster, client_secret: str) -> None:
    want = values(client_secret)
    assert target_values(fake) == want
    annotations = target(fake)["metadata"].get("annotations") or {}
    assert annotations.get(CHECKSUM_ANNOTATION) == checksum(want)
    assert ROLLOUT_PENDING_ANNOTATION not in annotations
    assert rolled_checksum(fake) == checksum(want)


def converge_again(fake: Cluster, env: dict, client_secret: str) -> None:
    fake.clear_faults()
    again = sync(env)
    assert again.rc == 0, again.output
    assert_converged(fake, client_secret)


# ---------------------------------------------------------------------------- API down at start


def test_sync_waits_for_a_kubernetes_api_that_refuses_then_answers_503_briefly(kube, env):
    down_at_start(kube, refuse=2, unavailable=1)  # fewer failures than the read's attempts, however slow

    result = sync(env)

    assert result.rc == 0, result.output
    assert (kube.faults.refuse_next, kube.faults.unavailable_next) == (0, 0)  # the whole outage was met
    assert kube.requests()[0].status == 503  # refused connections never reach the log
    assert result.find("Kubernetes read failed; retrying")
    assert_converged(kube, OLD_SECRET)


@pytest.mark.parametrize("mode", ["refuse", "503"])
def test_sync_gives_up_on_a_kubernetes_api_down_for_longer_than_its_retries_and_writes_nothing(kube, env, mode):
    outage = 10**6  # longer than any retry budget: the job's own limits decide
    kube.down_for_requests(**{"refuse" if mode == "refuse" else "unavailable": outage})

    result = sync(env)

    message = assert_clean_failure(result, f"read Secret {NS}/{ID_SECRET}")
    assert ("HTTP 503" if mode == "503" else "cannot reach the Kubernetes API") in message
    if mode == "refuse":
        assert f"port={kube.url.rsplit(':', 1)[1]}" in message  # where it tried
        tried = outage - kube.faults.refuse_next
        assert READ_ATTEMPTS <= tried <= READ_ATTEMPTS * 4, tried  # urllib3's Retry(3) inside each of our attempts
    else:
        assert outage - kube.faults.unavailable_next == READ_ATTEMPTS  # a 503 without Retry-After: ours alone
    kube.clear_faults()
    assert target(kube) is None and kube.writes() == []


# ---------------------------------------------------------------------------- 30% random 5xx


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_sync_under_30_percent_5xx_exits_0_or_1_never_loses_or_half_writes_the_secret(kube, env, seed):
    rotate(kube, env)
    before = target_values(kube)
    kube.random_errors(0.3, seed=seed)

    result = sync(env)

    kube.clear_faults()
    assert result.rc in (0, 1), result.output
    assert_no_traceback(result)
    assert_no_secret(result, NEW_SECRET, OLD_SECRET)
    assert_safe(kube, before, values(NEW_SECRET))
    if result.rc == 0:
        assert_converged(kube, NEW_SECRET)
    converge_again(kube, env, NEW_SECRET)
    assert len(kube.rollouts(NS, "coder")) == 2  # the first sync's roll, and exactly one for the rotation


# ---------------------------------------------------------------------------- latency, resets, 429


def test_sync_converges_with_200ms_latency_on_every_request(kube, env):
    rotate(kube, env)
    kube.faults.latency = 0.2

    result = sync(env)

    assert result.rc == 0, result.output
    assert not result.find("retrying")
    assert_converged(kube, NEW_SECRET)


def test_a_connection_reset_on_a_read_is_retried(kube, env):
    kube.faults.only_paths = TARGET_PATH
    kube.faults.reset_next = 1

    result = sync(env)

    assert kube.faults.reset_next == 0
    assert result.rc == 0, result.output
    assert_converged(kube, OLD_SECRET)


def test_a_connection_reset_on_the_create_exits_1_and_the_next_run_converges(kube, env):
    kube.faults.only_paths = CREATE_PATH
    kube.faults.reset_next = 1

    result = sync(env)

    assert kube.faults.reset_next == 0
    assert_clean_failure(result, f"create Secret {NS}/{TARGET}", "cannot reach the Kubernetes API")
    assert target(kube) is None
    converge_again(kube, env, OLD_SECRET)


@pytest.mark.parametrize("path", [TARGET_PATH, CREATE_PATH, DEPLOYMENT_PATH], ids=["read", "create", "patch-deployment"])
def test_sync_waits_at_least_retry_after_on_429_then_converges(kube, env, path):
    kube.faults.only_paths = path
    kube.faults.rate_limited = 1
    kube.faults.retry_after = 2

    result = sync(env)

    assert result.rc == 0, result.output
    assert_converged(kube, OLD_SECRET)
    [gap] = gaps_after_429(kube.proxy)
    assert gap >= 2.0, gap


# ---------------------------------------------------------------------------- 409 and 500 from the API


def test_conflicts_on_the_update_are_re_read_and_converge_keeping_the_other_writers_change(kube, env):
    rotate(kube, env)
    kube.conflict_next("secret", TARGET, n=2, namespace=NS)  # someone else writes it twice, just before us

    result = sync(env)

    assert result.rc == 0, result.output
    assert len(result.find("reading it again")) == 2
    assert_converged(kube, NEW_SECRET)
    assert target(kube)["metadata"]["annotations"]["test/touched"] == "2"  # their write survived ours
    assert len(kube.rollouts(NS, "coder")) == 2


def test_a_secret_that_keeps_conflicting_exits_1_unchanged_and_the_next_run_converges(kube, env):
    rotate(kube, env)
    before = target_values(kube)
    kube.conflict_next("secret", TARGET, n=5, namespace=NS)

    result = sync(env)

    assert_clean_failure(result, "kept changing", "the next run converges")
    assert target_values(kube) == before
    converge_again(kube, env, NEW_SECRET)


def test_a_500_on_the_update_exits_1_keeps_the_old_secret_and_the_next_run_converges(kube, env):
    rotate(kube, env)
    before = target_values(kube)
    kube.fail_next(500, n=1, path_regex=TARGET_PATH, method="PUT")

    result = sync(env)

    assert_clean_failure(result, f"update Secret {NS}/{TARGET}", "HTTP 500")
    assert target_values(kube) == before
    assert len(kube.rollouts(NS, "coder")) == 1
    converge_again(kube, env, NEW_SECRET)
    assert len(kube.rollouts(NS, "coder")) == 2


def test_500s_on_reads_are_retried(kube, env):
    kube.fail_next(500, n=2, path_regex=TARGET_PATH, method="GET")

    result = sync(env)

    assert result.rc == 0, result.output
    assert_converged(kube, OLD_SECRET)


def test_a_500_on_the_deployment_patch_leaves_the_rollout_pending_and_the_next_run_rolls(kube, env):
    rotate(kube, env)
    kube.fail_next(500, n=1, path_regex=DEPLOYMENT_PATH, method="PATCH")

    result = sync(env)

    assert_clean_failure(result, "patch Deployment", "HTTP 500")
    assert target_values(kube) == values(NEW_SECRET)  # the Secret is current ...
    assert target(kube)["metadata"]["annotations"][ROLLOUT_PENDING_ANNOTATION] == checksum(values(NEW_SECRET))
    assert rolled_checksum(kube) == checksum(values(OLD_SECRET))  # ... but coderd still runs the old values

    converge_again(kube, env, NEW_SECRET)
    assert len(kube.rollouts(NS, "coder")) == 2


# ---------------------------------------------------------------------------- SIGTERM mid-apply


def test_sync_killed_by_sigterm_while_rolling_coderd_exits_1_promptly_and_the_next_run_finishes_the_rollout(kube, env):
    rotate(kube, env)
    killed = threading.Event()

    # The Event is recorded once the Secret is written, before the roll (the Deployment was read
    # with the target, before planning).
    def slow_event(fake, record):  # the Secret is written; the roll has not happened yet
        if fake is kube.proxy and record.method == "POST" and record.path.endswith("/events"):
            killed.wait(5)

    with record_hook(slow_event):
        proc = start_job("sync-external-auth", env=env)
        wait_until(lambda: kube.requests("POST", EVENTS_PATH), what="the Event on the written Secret")
        result, took = terminate(proc)
        killed.set()

    assert took < 3, took
    assert_clean_failure(result, "SIGTERM")
    assert target_values(kube) == values(NEW_SECRET)
    assert ROLLOUT_PENDING_ANNOTATION in target(kube)["metadata"]["annotations"]
    assert len(kube.rollouts(NS, "coder")) == 1

    again = sync(env)

    assert again.rc == 0, again.output
    assert_converged(kube, NEW_SECRET)
    assert len(kube.rollouts(NS, "coder")) == 2
