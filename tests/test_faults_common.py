"""Shared helpers for the fault-injection suite (tests/test_faults_*.py). No tests here.

Every fault test runs the real CLI in a subprocess against the coderd fake or the real
Kubernetes API server (through the fault proxy), then asserts on the server's *state*: which
templates, versions, users, stop builds and Secrets exist, not only on the exit code.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from fakes import base
from fakes.base import FakeServer, Record
from fakes.coderd import FakeCoderd
from tests.conftest import CANARY_PASSWORD, Result, job_env
from tests.job_process import JobProcess, launcher

TEMPLATES = ("ameide-dev", "ameide-gitops")
CODER_JOBS = ("bootstrap-admin", "republish-templates", "recover", "reap")
VERSIONS_POST = r"^/api/v2/organizations/[^/]+/templateversions$"
BUILDS_POST = r"^/api/v2/workspaces/[^/]+/builds$"
H = timedelta(hours=1)
M = timedelta(minutes=1)


# ---------------------------------------------------------------------------- environment


@pytest.fixture
def env(templates_env, templates):
    """Settings every coder job accepts (bootstrap-admin and reap ignore the template ones)."""
    return {**templates_env, "TEMPLATES_DIR": str(templates), "CODER_READY_TIMEOUT": "20"}


def with_admin(fake: FakeCoderd) -> None:
    """The first user, as bootstrap-admin would have created it (for jobs that need one)."""
    if fake.user("platform-admin") is None:
        fake.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)


def prepare(job: str, fake: FakeCoderd) -> None:
    """What each job needs on coderd before it can run: republish and reap need a user to log in as."""
    if job in ("republish-templates", "reap"):
        with_admin(fake)


# ---------------------------------------------------------------------------- faults


def down_at_start(fake: FakeServer, refuse: int, unavailable: int) -> None:
    """A server that is starting: the first `refuse` connections are refused, then a proxy
    answers 503 to the next `unavailable` requests, then it serves. Counted in requests, not
    seconds, so a slow process start cannot miss the outage."""
    fake.down_for_requests(refuse=refuse, unavailable=unavailable)


@contextmanager
def record_hook(fn: Callable[[FakeServer, Record], None]) -> Iterator[None]:
    """Run `fn(fake, record)` after each request is handled, before its answer is sent."""
    base.RECORD_HOOKS.append(fn)
    try:
        yield
    finally:
        base.RECORD_HOOKS.remove(fn)


def gaps_after_429(fake: FakeServer) -> list[float]:
    """For each 429 the fake answered: seconds until the next request to the same path."""
    with fake.lock:
        log = list(fake.log)
    out = []
    for i, r in enumerate(log):
        if r.status == 429:
            later = [n for n in log[i + 1:] if n.path == r.path and n.method == r.method]
            assert later, f"{r.method} {r.path} was never repeated after its 429"
            out.append(later[0].time - r.time)
    return out


# ---------------------------------------------------------------------------- processes


def start_job(*args: str, env: dict[str, str]) -> JobProcess:
    """`coder-jobs` started in the background, as Kubernetes starts a Job's pod."""
    return launcher().start(["--log-format", "json", *args], job_env(env))


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def terminate(proc: JobProcess, timeout: float = 10) -> tuple[Result, float]:
    """SIGTERM (what Kubernetes sends at activeDeadlineSeconds); returns the result and how long it took to exit."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the job did not exit within {timeout}s of SIGTERM:\n{out[-2000:]}\n{err[-2000:]}") from None
    return Result(proc.returncode, out, err), time.monotonic() - sent


def assert_clean_failure(result: Result, *words: str) -> str:
    """Exit 1, one error event with a message (containing `words`), no traceback anywhere."""
    assert result.rc == 1, result.output
    assert "Traceback" not in result.output, result.output
    errors = result.errors()
    assert errors, result.output
    message = errors[-1]["event"]
    for word in words:
        assert word in message, message
    return message


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, result.output


# ---------------------------------------------------------------------------- coderd state


def real_users(fake: FakeCoderd) -> list[dict]:
    with fake.lock:
        return [u for u in fake.users.values() if u["username"] != "prebuilds"]


def template_state(fake: FakeCoderd) -> dict[str, dict]:
    """template name -> {template, active version, versions attached to it, active job status}."""
    with fake.lock:
        out = {}
        for t in fake.templates.values():
            assert t["name"] not in out, f"duplicate template {t['name']}"
            attached = [v for v in fake.versions.values() if v.get("template_id") == t["id"]]
            active = fake.versions[t["active_version_id"]]
            out[t["name"]] = {"template": t, "active": active, "versions": attached,
                              "status": fake.job_status(fake.jobs[active["job_id"]])}
        return out


def assert_no_duplicates(fake: FakeCoderd) -> dict[str, dict]:
    """Each template once, no two versions attached to a template with the same content, at most one user."""
    now = template_state(fake)
    for name, t in now.items():
        contents = [v["message"].split("content=")[-1].split()[0] for v in t["versions"] if "content=" in v["message"]]
        assert len(contents) == len(set(contents)), f"{name}: the same content was attached twice: {t['versions']}"
    assert len(real_users(fake)) <= 1
    return now


def assert_templates_converged(fake: FakeCoderd, versions_each: int = 1) -> dict[str, dict]:
    """Both templates exist once, with one succeeded active version each (and no other attached)."""
    now = assert_no_duplicates(fake)
    assert sorted(now) == list(TEMPLATES), sorted(now)
    for name in TEMPLATES:
        assert now[name]["status"] == "succeeded", name
        assert len(now[name]["versions"]) == versions_each, (name, [v["name"] for v in now[name]["versions"]])
    return now


def assert_first_user_once(fake: FakeCoderd) -> None:
    users = real_users(fake)
    assert [u["username"] for u in users] == ["platform-admin"], users


def assert_converged(job: str, fake: FakeCoderd) -> None:
    """What each job leaves behind when it converged."""
    if job in ("bootstrap-admin", "recover"):
        assert_first_user_once(fake)
    if job in ("republish-templates", "recover"):
        assert_templates_converged(fake)


# ---------------------------------------------------------------------------- reap fixtures


def fake_now(fake: FakeCoderd) -> datetime:
    return datetime.fromtimestamp(fake.now(), tz=UTC)


def reap_scenario(fake: FakeCoderd, owners: int = 8) -> tuple[dict[str, str], set[str]]:
    """Seed every kind of workspace for several owners. Returns ({id: "owner/name"}, ids that must be stopped)."""
    now = fake_now(fake)
    specs, must_stop = [], []

    def add(owner: str, name: str, stop: bool, **kw) -> None:
        specs.append({"owner": owner, "name": name, "template": "ameide-dev", "transition": "start",
                      "job_status": "succeeded", **kw})
        must_stop.append(stop)

    for i in range(owners):
        o = f"dev{i:02d}"
        add(o, "idle", True, last_used_at=now - (5 + i / 10) * H, completed_at=now - 6 * H)
        add(o, "idle-long", True, last_used_at=now - (30 + i) * H, completed_at=now - 40 * H)
        add(o, "active", False, last_used_at=now - 10 * M, completed_at=now - 6 * H)
        add(o, "starting", False, last_used_at=now - 30 * H, completed_at=None, job_status="running")
        add(o, "stopping", False, last_used_at=now - 30 * H, completed_at=None, job_status="running", transition="stop")
        add(o, "stopped", False, last_used_at=now - 30 * H, completed_at=now - 20 * H, transition="stop")
        add(o, "unknown", False, last_used_at=None, completed_at=now - 20 * H)
        add(o, "keep-me", False, last_used_at=now - 30 * H, completed_at=now - 30 * H)  # REAP_EXEMPT */keep-*
    for o in sorted({s["owner"] for s in specs}):
        if fake.user(o) is None:
            fake.create_user(o, roles=())
    ids = fake.seed_workspaces(specs)
    names = {wid: f"{s['owner']}/{s['name']}" for wid, s in zip(ids, specs)}
    return names, {wid for wid, stop in zip(ids, must_stop) if stop}


@pytest.fixture
def reap_env(env):
    return {**env, "REAP_EXEMPT": "*/keep-*", "REAP_MAX_STOPS": "1000", "REAP_PAGE_SIZE": "7", "REAP_CONCURRENCY": "4"}


def stop_builds(fake: FakeCoderd) -> dict[str, int]:
    """workspace id -> stop builds created since seeding (seeded builds are number 1)."""
    with fake.lock:
        out = {}
        for ws in fake.workspaces.values():
            n = sum(1 for b in ws.builds if b.build_number > 1 and b.transition == "stop")
            if n:
                out[ws.id] = n
        return out


def assert_reap_safe(fake: FakeCoderd, names: dict[str, str], idle: set[str]) -> dict[str, int]:
    """The reaper's invariants under any fault: only idle workspaces got a stop, none got two."""
    stops = stop_builds(fake)
    wrong = sorted(names[w] for w in stops if w not in idle)
    assert not wrong, f"stopped workspaces that are not idle: {wrong}"
    twice = sorted(names[w] for w, n in stops.items() if n > 1)
    assert not twice, f"stopped twice: {twice}"
    posted = [re.match(r"/api/v2/workspaces/([^/]+)/builds", r.path).group(1) for r in fake.requests("POST", BUILDS_POST)]
    assert set(posted) <= idle, "a stop build was requested for a workspace that is not idle"
    return stops
