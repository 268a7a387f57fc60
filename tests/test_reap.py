"""`coder-jobs reap` end to end: the CLI as a subprocess against the coderd (and Kubernetes) fakes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fakes.coderd import FakeCoderd
from tests.conftest import CANARY_PASSWORD, REPO, assert_no_secret, coder_writes, run_job

H = timedelta(hours=1)
M = timedelta(minutes=1)
BUILDS = r"^/api/v2/workspaces/[^/]+/builds$"
RULES = """
rules:
  - id: gitops
    template: ameide-gitops
    idle_after: 8h
  - id: service-accounts
    owner: svc-*
    exempt: true
  - id: quick
    workspace: quick-*
    idleAfter: 30m
"""


def fake_now(fake: FakeCoderd) -> datetime:
    return datetime.fromtimestamp(fake.now(), tz=UTC)


def spec(owner, name, *, lu, done, transition="start", job="succeeded", template="ameide-dev", autostart=None):
    s = {"owner": owner, "name": name, "template": template, "transition": transition, "job_status": job,
         "last_used_at": lu, "completed_at": done}
    if autostart:
        s["autostart_schedule"] = autostart
    return s


def scenario(now: datetime, owners: int = 30) -> tuple[list[dict], set[str]]:
    """Every case, for many owners. Returns (specs, names of the workspaces that must be stopped)."""
    specs, stop = [], set()

    def add(owner, name, must_stop, **kw):
        specs.append(spec(owner, name, **kw))
        if must_stop:
            stop.add(f"{owner}/{name}")

    for i in range(owners):
        o = f"dev{i:02d}"
        add(o, "idle", True, lu=now - (5 + i / 10) * H, done=now - 6 * H)
        add(o, "active", False, lu=now - 10 * M, done=now - 6 * H)
        add(o, "fresh-start", False, lu=now - 30 * H, done=now - 3 * M)  # started by hand, never connected yet
        add(o, "starting", False, lu=now - 30 * H, done=None, job="running")
        add(o, "pending", False, lu=now - 30 * H, done=None, job="pending")
        add(o, "stopping", False, lu=now - 30 * H, done=None, job="running", transition="stop")
        add(o, "stopped", False, lu=now - 30 * H, done=now - 20 * H, transition="stop")
        add(o, "failed", False, lu=now - 30 * H, done=now - 20 * H, job="failed")
        add(o, "canceled", False, lu=now - 30 * H, done=now - 20 * H, job="canceled")
        add(o, "unknown", False, lu=None, done=now - 20 * H)
        add(o, "keep-me", False, lu=now - 30 * H, done=now - 30 * H)  # REAP_EXEMPT */keep-*
        add(o, "gitops-5h", False, lu=now - 5 * H, done=now - 6 * H, template="ameide-gitops")  # rule: 8h
        add(o, "gitops-9h", True, lu=now - 9 * H, done=now - 10 * H, template="ameide-gitops")
        add(o, "quick-45m", True, lu=now - 45 * M, done=now - 50 * M)  # rule: 30m
        add(o, "quick-20m", False, lu=now - 20 * M, done=now - 50 * M)
        if i % 5 == 0:
            add(o, "autostart", True, lu=now - 4 * H, done=now - 4 * H, autostart="CRON_TZ=Europe/Berlin 30 9 * * 1-5")
    for i in range(3):
        add(f"svc-{i}", "bot", False, lu=now - 40 * H, done=now - 40 * H)  # rule: exempt
        add("prebuilds", f"prebuilt-{i}", False, lu=now - 40 * H, done=now - 40 * H)
    return specs, stop


def seed(fake: FakeCoderd, specs: list[dict]) -> dict[str, str]:
    """Seed; returns {workspace id: "owner/name"}."""
    owners = sorted({s["owner"] for s in specs} - {"prebuilds"})
    for o in owners:
        if fake.user(o) is None:
            fake.create_user(o, roles=())
    ids = fake.seed_workspaces(specs)
    return {wid: f"{s['owner']}/{s['name']}" for wid, s in zip(ids, specs)}


@pytest.fixture
def reap_env(coderd, tmp_path):
    coderd.create_user("admin", password=CANARY_PASSWORD)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return {
        "CODER_URL": coderd.url,
        "CODER_ADMIN_EMAIL": "admin@example.com",
        "CODER_ADMIN_PASSWORD": CANARY_PASSWORD,
        "CODER_READY_TIMEOUT": "20",
        "REAP_EXEMPT": "*/keep-*",
        "REAP_RULES_FILE": str(rules),
        "REAP_MAX_STOPS": "1000",
        "REAP_PAGE_SIZE": "37",  # many pages, odd boundaries
    }


def stopped_names(fake: FakeCoderd, ids: dict[str, str]) -> list[str]:
    posted = [ids[re.match(r"/api/v2/workspaces/([^/]+)/builds", r.path).group(1)] for r in fake.requests("POST", BUILDS)]
    return posted


def plan_events(result) -> set[tuple[str, str]]:
    return {(e["event"].removeprefix("would "), e["target"]) for e in result.events if e.get("phase") == "plan"}


def summary(result) -> dict:
    (s,) = result.find("summary")
    return s


def test_exactly_the_right_workspaces_are_stopped_and_dry_run_prints_the_same_plan(coderd, reap_env):
    specs, expected = scenario(fake_now(coderd))
    ids = seed(coderd, specs)
    assert len(specs) > 400

    dry = run_job("reap", "--dry-run", env=reap_env)
    assert dry.rc == 0, dry.output
    assert coderd.requests("POST", BUILDS) == [] and coder_writes(coderd) == []
    assert {t for e, t in plan_events(dry) if e == "stop"} == {f"workspace/{n}" for n in expected}
    assert {e["event"] for e in dry.events if e.get("action") == "stop"} == {"would stop"}  # a dry run says so

    real = run_job("reap", env=reap_env)
    assert real.rc == 0, real.output
    assert sorted(stopped_names(coderd, ids)) == sorted(expected)
    assert plan_events(real) == plan_events(dry)
    s = summary(real)
    n = 30
    assert s["stopped"] == len(expected) and s["planned_stops"] == len(expected) and s["deferred"] == 0
    assert s["exempt"] == n + 3 + 3  # keep-me per owner, svc-* by rule, prebuilds
    assert s["unknown"] == n and s["busy"] == 0 and s["failed"] == 0
    assert s["scanned"] == s["running"]  # q=status:running: only running rows were read
    assert summary(dry)["stopped"] == 0
    autostart = [e for e in real.events if e["event"] == "stop" and e["target"].endswith("/autostart")]
    assert autostart and all("autostart" in e["note"] for e in autostart)
    assert {e["target"] for e in real.events if e["event"] == "unknown"} == {f"workspace/dev{i:02d}/unknown" for i in range(n)}
    assert {e["target"] for e in real.events if e["event"] == "exempt"} >= {"workspace/prebuilds/prebuilt-0", "workspace/svc-0/bot"}
    assert all(e.get("phase") == "apply" for e in real.events if e["event"] == "stopped")
    assert_no_secret(real, CANARY_PASSWORD)
    assert_no_secret(dry, CANARY_PASSWORD)
    # only reads with server-side filters, page by page
    lists = coderd.requests("GET", r"^/api/v2/workspaces$")
    assert lists and all("status:running" in (r.query.get("q") or [""])[0] or "id:" in (r.query.get("q") or [""])[0]
                         for r in lists)


def test_max_stops_takes_the_oldest_idle_first_and_defers_the_rest(coderd, reap_env):
    now = fake_now(coderd)
    specs = [spec(f"u{i % 9}", f"w{i:03d}", lu=now - (3 * H + i * M), done=now - 50 * H) for i in range(120)]
    specs += [spec("u0", f"busy{i}", lu=now - 90 * H, done=None, job="running") for i in range(3)]
    ids = seed(coderd, specs)
    result = run_job("reap", env={**reap_env, "REAP_MAX_STOPS": "5"})
    assert result.rc == 0, result.output
    stopped = stopped_names(coderd, ids)
    assert sorted(stopped) == sorted(f"u{i % 9}/w{i:03d}" for i in range(115, 120))
    s = summary(result)
    assert s["stopped"] == 5 and s["deferred"] == 115 and s["idle"] == 120
    assert len({e["target"] for e in result.events if e["event"] == "deferred"}) == 115


@pytest.mark.parametrize("offset", [3600, -3600])
def test_pod_clock_skew_does_not_change_decisions(coderd, reap_env, offset):
    coderd.clock_offset = offset  # the fake (and its Date header) is an hour off the test process's clock
    specs, expected = scenario(fake_now(coderd), owners=6)
    ids = seed(coderd, specs)
    result = run_job("reap", env=reap_env)
    assert result.rc == 0, result.output
    assert sorted(stopped_names(coderd, ids)) == sorted(expected)
    (scan,) = result.find("scan")
    assert abs(scan["pod_clock_skew_s"] - offset) < 30


def quota_specs(now):
    specs = [spec("hog", f"run{i}", lu=now - (10 + i) * M, done=now - 3 * H) for i in range(6)]  # active, not idle
    specs += [spec("hog", "keep-x", lu=now - 100 * M, done=now - 3 * H)]  # exempt, still counts
    specs += [spec("hog", f"off{i}", lu=now - 30 * H, done=now - 30 * H, transition="stop") for i in range(4)]
    specs += [spec("fine", f"w{i}", lu=now - 5 * M, done=now - 3 * H) for i in range(2)]
    specs += [spec("lazy", "old", lu=now - 5 * H, done=now - 6 * H)] + [spec("lazy", f"w{i}", lu=now - 5 * M, done=now - 3 * H)
                                                                       for i in range(3)]
    return specs


def test_quota_report_mode_reports_and_stops_only_idle(coderd, reap_env):
    ids = seed(coderd, quota_specs(fake_now(coderd)))
    env = {**reap_env, "REAP_MAX_RUNNING_PER_USER": "3", "REAP_MAX_WORKSPACES_PER_USER": "8"}
    result = run_job("reap", env=env)
    assert result.rc == 0, result.output
    v = {(e["owner"], e["quota"], e["count"]) for e in result.find("quota-violation")}
    assert v == {("hog", "workspaces", 11), ("hog", "running", 7), ("lazy", "running", 4)}
    assert all(e["level"] == "warning" for e in result.find("quota-violation"))
    assert stopped_names(coderd, ids) == ["lazy/old"]  # the idle one; quotas are only reported
    assert summary(result)["quota_violations"] == 3
    # totals need every workspace: one unfiltered pass instead of a running pass + per-owner counts
    assert any((r.query.get("q") or [""])[0] == "" for r in coderd.requests("GET", r"^/api/v2/workspaces$"))


def test_quota_stop_mode_stops_least_recently_used_down_to_the_limit(coderd, reap_env):
    ids = seed(coderd, quota_specs(fake_now(coderd)))
    env = {**reap_env, "REAP_MAX_RUNNING_PER_USER": "3", "REAP_QUOTA_ACTION": "stop"}
    result = run_job("reap", env=env)
    assert result.rc == 0, result.output
    # hog: 7 running (keep-x exempt) -> stop 4 least recently used of run0..run5; lazy: idle stop of old suffices
    assert sorted(stopped_names(coderd, ids)) == sorted(["lazy/old", "hog/run5", "hog/run4", "hog/run3", "hog/run2"])
    owners_q = [(r.query.get("q") or [""])[0] for r in coderd.requests("GET", r"^/api/v2/workspaces$")]
    assert "owner:hog status:running" in owners_q and not any(q.startswith("owner:fine") for q in owners_q)
    s = summary(result)
    assert s["quota_stops"] == 4 and s["stopped"] == 5

    # within the same cap: REAP_MAX_STOPS=2 -> the idle stop first, then one quota stop, the rest deferred
    coderd.reset_database()
    coderd.clear_log()
    coderd.create_user("admin", password=CANARY_PASSWORD)
    ids = seed(coderd, quota_specs(fake_now(coderd)))
    result = run_job("reap", env={**env, "REAP_MAX_STOPS": "2"})
    assert result.rc == 0, result.output
    assert sorted(stopped_names(coderd, ids)) == ["hog/run5", "lazy/old"]
    assert summary(result)["deferred"] == 3


@pytest.mark.parametrize("text", ["rules: [\n", "rules:\n  - owner: a\n    idle_after: soon\n",
                                  "rules:\n  - owner: a\n    exempt: true\n    colour: red\n", "rules: {a: 1}\n"])
def test_broken_rules_file_exits_2_before_any_request(coderd, reap_env, tmp_path, text):
    now = fake_now(coderd)
    seed(coderd, [spec("dev", "idle", lu=now - 9 * H, done=now - 9 * H)])
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = run_job("reap", env={**reap_env, "REAP_RULES_FILE": str(bad)})
    assert result.rc == 2, result.output
    assert "REAP_RULES_FILE" in result.output
    assert coder_writes(coderd) == [] and coderd.requests("GET", r"^/api/v2/workspaces") == []


@pytest.mark.parametrize("env", [{"REAP_EXEMPT": "justaname"}, {"REAP_IDLE_AFTER": "1m"}, {"REAP_IDLE_AFTER": "forever"}])
def test_bad_settings_exit_2(coderd, reap_env, env):
    result = run_job("reap", env={**reap_env, **env})
    assert result.rc == 2, result.output
    assert coder_writes(coderd) == []


def test_overlapping_runs_never_double_stop_and_treat_conflicts_as_busy(reap_env):
    """Two reapers at once (a CronJob overlap): every idle workspace gets exactly one stop build;
    the loser of each race sees either the active build on its re-read or a 409, both "busy"."""
    fake = FakeCoderd(provisioner_paused=True).start()  # stop builds stay pending: later stops would 409
    try:
        fake.create_user("admin", password=CANARY_PASSWORD)
        now = fake_now(fake)
        ids = seed(fake, [spec(f"u{i % 4}", f"w{i:02d}", lu=now - 9 * H, done=now - 9 * H) for i in range(24)])
        env = {**reap_env, "CODER_URL": fake.url, "REAP_CONCURRENCY": "8"}
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda _: run_job("reap", env=env), range(2))
        assert a.rc == 0 and b.rc == 0, a.output + b.output
        created = [r for r in fake.requests("POST", BUILDS) if r.status == 201]
        assert {r.status for r in fake.requests("POST", BUILDS)} <= {201, 409}
        assert sorted(ids[r.path.split("/")[4]] for r in created) == sorted(ids.values())
        sa, sb = summary(a), summary(b)
        assert sa["stopped"] + sb["stopped"] == 24 and sa["failed"] == sb["failed"] == 0
        assert sa["stopped"] + sb["stopped"] + sa["busy"] + sb["busy"] + sa["skipped"] + sb["skipped"] >= 24
    finally:
        fake.stop()


def test_api_down_exits_1(reap_env, coderd):
    coderd.stop()
    result = run_job("reap", env={**reap_env, "CODER_READY_TIMEOUT": "1"})
    assert result.rc == 1
    assert_no_secret(result, CANARY_PASSWORD)


def test_token_canary_never_printed(coderd, reap_env):
    now = fake_now(coderd)
    seed(coderd, [spec("dev", "idle", lu=now - 9 * H, done=now - 9 * H)])
    token = coderd.token_for("admin")
    env = {k: v for k, v in reap_env.items() if not k.startswith("CODER_ADMIN")}
    result = run_job("reap", env={**env, "CODER_SESSION_TOKEN": token})
    assert result.rc == 0, result.output
    assert summary(result)["stopped"] == 1
    assert_no_secret(result, token, token.split("-")[0], token.split("-")[-1])


# -- Kubernetes checks ----------------------------------------------------------------------
NS = "coder-workspaces"


def workspace_objects(kube, wid: str, name: str) -> None:
    labels = {"app.kubernetes.io/name": "coder-workspace", "com.coder.workspace.id": wid, "com.coder.workspace.name": name}
    kube.put("deployments", NS, {"metadata": {"name": f"coder-{wid}", "labels": labels}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"com.coder.workspace.id": wid}},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "dev", "image": "envbuilder"}]}}}})
    kube.put("pods", NS, {"metadata": {"name": f"coder-{wid}-abc12", "labels": labels},
                          "spec": {"containers": [{"name": "dev", "image": "envbuilder"}]}})


def test_orphans_and_resource_quota_after_a_database_reset(coderd, reap_env, kube, tmp_path):
    now = fake_now(coderd)
    ids = seed(coderd, [spec("dev", "running", lu=now - 5 * M, done=now - H),
                        spec("dev", "stopped", lu=now - 5 * H, done=now - 4 * H, transition="stop"),
                        spec("dev", "stopping", lu=now - 5 * H, done=None, transition="stop", job="running")])
    by_name = {v.split("/")[1]: k for k, v in ids.items()}
    ghost = str(uuid.uuid4())
    for name, wid in {**by_name, "ghost": ghost}.items():
        workspace_objects(kube, wid, name)
    kube.put("pods", NS, {"metadata": {"name": "unlabelled", "labels": {"app.kubernetes.io/name": "coder-workspace"}},
                          "spec": {"containers": [{"name": "x", "image": "x"}]}})
    kube.put("pods", NS, {"metadata": {"name": "other-app", "labels": {"app": "db"}},
                          "spec": {"containers": [{"name": "x", "image": "x"}]}})
    kube.put("resourcequotas", NS, {"metadata": {"name": "workspaces"}, "spec": {"hard": {"requests.cpu": "10", "pods": "20"}},
                                    "status": {"hard": {"requests.cpu": "10", "pods": "20"},
                                               "used": {"requests.cpu": "9500m", "pods": "4"}}})
    env = {**reap_env, "REAP_WORKSPACE_NAMESPACE": NS, "KUBECONFIG": kube.kubeconfig(tmp_path / "kubeconfig")}

    result = run_job("reap", "--delete-orphans", "--dry-run", env=env)
    assert result.rc == 0, result.output
    orphans = {e["target"] for e in result.find("orphan")}
    assert orphans == {f"{k}/{NS}/coder-{by_name['stopped']}{s}" for k, s in (("pod", "-abc12"), ("deployment", ""))} | \
                      {f"{k}/{NS}/coder-{ghost}{s}" for k, s in (("pod", "-abc12"), ("deployment", ""))}
    assert summary(result)["orphans"] == 2
    assert len(kube.objects("pods", NS)) == 6  # dry-run deletes nothing
    high = result.find("quota-usage-high")
    assert [(e["resource"], e["percent"]) for e in high] == [("requests.cpu", 95.0)] and high[0]["level"] == "warning"
    assert {e["resource"] for e in result.events if e["event"] == "quota-usage"} == {"pods"}
    assert [e["target"] for e in result.find("unlabelled")] == [f"pod/{NS}/unlabelled"]
    looked_up = [(r.query.get("q") or [""])[0] for r in coderd.requests("GET", r"^/api/v2/workspaces$")]
    assert any(q.startswith("id:") for q in looked_up)

    # without --delete-orphans: reported only
    result = run_job("reap", env=env)
    assert result.rc == 0 and len(kube.objects("pods", NS)) == 6

    # the database is reset: every workspace pod is now an orphan
    coderd.reset_database()
    coderd.create_user("admin", password=CANARY_PASSWORD)
    result = run_job("reap", "--delete-orphans", env=env)
    assert result.rc == 0, result.output
    assert summary(result)["orphans"] == 4 and summary(result)["deleted"] == 8
    assert sorted(p["metadata"]["name"] for p in kube.objects("pods", NS)) == ["other-app", "unlabelled"]
    assert kube.objects("deployments", NS) == []
    assert_no_secret(result, CANARY_PASSWORD)


GITHUB_CANARY = "gho_ReaperCanaryGithubToken00000000000000"
AGENT_CANARY = "reaper-canary-agent-token-0f1e2d3c"


def credentials_secret(kube, wid: str, name: str | None = None, labels: dict | None = None) -> None:
    """The templates' Secret (modules/workspace/main.tf): name, labels and the two tokens."""
    labels = {"app.kubernetes.io/name": "coder-workspace", "com.coder.workspace.id": wid} if labels is None else labels
    kube.put("secrets", NS, {"metadata": {"name": name or f"coder-{wid}-credentials", "labels": labels},
                             "type": "Opaque", "stringData": {"ENVBUILDER_GIT_PASSWORD": GITHUB_CANARY,
                                                              "CODER_AGENT_TOKEN": AGENT_CANARY}})


def test_orphaned_credentials_secret_is_reported_and_deleted_only_with_delete_orphans(coderd, reap_env, kube, tmp_path):
    """A workspace deleted behind coderd's back (or a database reset) leaves its Secret with a
    developer's GitHub token. Found like an orphaned pod; nothing else is touched."""
    now = fake_now(coderd)
    ids = seed(coderd, [spec("dev", "running", lu=now - 5 * M, done=now - H)])
    running = next(iter(ids))
    ghost = str(uuid.uuid4())
    workspace_objects(kube, running, "running")
    credentials_secret(kube, running)
    credentials_secret(kube, ghost)  # its pod and Deployment are already gone
    credentials_secret(kube, str(uuid.uuid4()), name="look-alike")  # labelled, but not the templates' name
    kube.put("secrets", NS, {"metadata": {"name": "codex-auth-0"}, "stringData": {"auth.json": "{}"}})
    before = sorted(o["metadata"]["name"] for o in kube.objects("secrets", NS))
    env = {**reap_env, "REAP_WORKSPACE_NAMESPACE": NS, "KUBECONFIG": kube.kubeconfig(tmp_path / "kubeconfig")}

    dry = run_job("reap", "--delete-orphans", "--dry-run", env=env)
    assert dry.rc == 0, dry.output
    orphan = f"secret/{NS}/coder-{ghost}-credentials"
    assert [e["target"] for e in dry.find("orphan")] == [orphan]
    assert dry.find("orphan")[0]["reason"].startswith("no such workspace in coderd")
    assert summary(dry)["orphan_secrets"] == 1 and summary(dry)["deleted"] == 0
    assert [e["target"] for e in dry.find("unlabelled")] == [f"secret/{NS}/look-alike"]
    assert sorted(o["metadata"]["name"] for o in kube.objects("secrets", NS)) == before

    reported = run_job("reap", env=env)  # without --delete-orphans: reported only
    assert reported.rc == 0 and [e["target"] for e in reported.find("orphan")] == [orphan]
    assert sorted(o["metadata"]["name"] for o in kube.objects("secrets", NS)) == before

    result = run_job("reap", "--delete-orphans", env=env)
    assert result.rc == 0, result.output
    assert [e["target"] for e in result.find("deleted")] == [orphan]
    assert summary(result)["deleted"] == 1
    assert kube.get_object("secrets", NS, f"coder-{ghost}-credentials") is None
    assert sorted(o["metadata"]["name"] for o in kube.objects("secrets", NS)) == sorted(
        set(before) - {f"coder-{ghost}-credentials"})
    assert len(kube.objects("pods", NS)) == 1 and len(kube.objects("deployments", NS)) == 1
    for run in (dry, reported, result):
        assert_no_secret(run, GITHUB_CANARY, AGENT_CANARY, CANARY_PASSWORD)


def test_delete_orphans_needs_a_namespace(coderd, reap_env):
    result = run_job("reap", "--delete-orphans", env=reap_env)
    assert result.rc == 2 and "REAP_WORKSPACE_NAMESPACE" in result.output
    assert coder_writes(coderd) == []  # refused before anything is asked of coderd


def test_delete_orphans_without_a_namespace_is_named_with_every_other_bad_setting(coderd, reap_env):
    result = run_job("reap", env={**reap_env, "REAP_DELETE_ORPHANS": "true", "REAP_IDLE_AFTER": "1m"})
    assert result.rc == 2
    assert "REAP_DELETE_ORPHANS (--delete-orphans): needs REAP_WORKSPACE_NAMESPACE" in result.output
    assert "REAP_IDLE_AFTER: 1m is shorter than 5m" in result.output


def test_reaper_without_namespace_never_imports_kubernetes():
    import subprocess
    import sys

    code = "import sys, jobs.reap, jobs.cli; assert 'kubernetes' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(REPO)).returncode == 0
