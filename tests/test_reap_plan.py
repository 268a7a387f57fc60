"""The reaper's pure decisions over Workspace models (no servers)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.models import Workspace
from jobs.reap_plan import PREBUILDS_USER_ID, Scan, classify, plan_quota_stops, quota_violations
from jobs.reap_rules import Policy, parse_exempt, parse_rules

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
POLICY = Policy(2 * H)


def ws(owner="alice", name="w", *, transition="start", job="succeeded", last_used=NOW - 5 * H, completed=NOW - 6 * H,
       template="ameide-dev", owner_id="", autostart=None, wid=None) -> Workspace:
    body = {
        "id": wid or str(uuid.uuid4()), "name": name, "owner_name": owner, "owner_id": owner_id or str(uuid.uuid4()),
        "template_name": template,
        "latest_build": {"id": str(uuid.uuid4()), "transition": transition,
                         "job": {"id": str(uuid.uuid4()), "status": job,
                                 "completed_at": completed.isoformat() if completed else None}},
    }
    if last_used is not None:
        body["last_used_at"] = last_used if isinstance(last_used, str) else last_used.isoformat()
    if autostart:
        body["autostart_schedule"] = autostart
    return Workspace.model_validate(body)


def kinds(w, policy=POLICY):
    return classify(w, NOW, policy).kind


def test_classify_every_case():
    assert kinds(ws()) == "idle"
    assert kinds(ws(last_used=NOW - H)) == "active"
    # started a minute ago by hand, never connected: old last_used_at but fresh build
    assert kinds(ws(last_used=NOW - 50 * H, completed=NOW - timedelta(minutes=1))) == "active"
    for job in ("pending", "running", "canceling"):
        assert kinds(ws(job=job)) == "busy"
        assert kinds(ws(transition="stop", job=job)) == "busy"
    assert kinds(ws(transition="stop")) == "not-running"
    assert kinds(ws(job="failed")) == "not-running"
    assert kinds(ws(job="canceled")) == "not-running"
    assert kinds(ws(last_used=None)) == "unknown"
    assert kinds(ws(last_used="0001-01-01T00:00:00Z")) == "unknown"
    assert kinds(ws(owner="prebuilds")) == "prebuild"
    assert kinds(ws(owner="x", owner_id=PREBUILDS_USER_ID)) == "prebuild"
    assert kinds(ws(owner="bob", name="keep-1"), Policy(2 * H, parse_exempt("bob/keep-*"))) == "exempt"
    # boundary: exactly idle-after old is not older than idle-after
    assert kinds(ws(last_used=NOW - 2 * H, completed=NOW - 3 * H)) == "active"


def test_rules_override_idle_after_and_exemption():
    policy = Policy(2 * H, (), parse_rules({"rules": [
        {"id": "gitops", "template": "ameide-gitops", "idle_after": "8h"}, {"id": "bots", "owner": "svc-*", "exempt": True},
        {"id": "quick", "workspace": "quick-*", "idle_after": "30m"}]}))
    assert kinds(ws(template="ameide-gitops"), policy) == "active"  # 5h < 8h
    assert kinds(ws(template="ameide-gitops", last_used=NOW - 9 * H, completed=NOW - 9 * H), policy) == "idle"
    assert kinds(ws(owner="svc-ci"), policy) == "exempt"
    assert kinds(ws(name="quick-1", last_used=NOW - 45 * timedelta(minutes=1), completed=NOW - H), policy) == "idle"


def run_scan(rows, max_stops=20, policy=POLICY, totals=False):
    events = []
    scan = Scan(NOW, policy, max_stops, count_totals=totals)
    for w in rows:
        events += scan.add(w)
    return scan.finish(), events


def test_cap_keeps_the_oldest_and_defers_the_rest_exactly_once():
    rows = [ws("u%d" % (i % 7), "w%d" % i, last_used=NOW - (3 + i) * H, completed=NOW - 100 * H) for i in range(40)]
    random.Random(4).shuffle(rows)
    result, events = run_scan(rows, max_stops=5)
    assert [c.name for c in result.stops] == ["w39", "w38", "w37", "w36", "w35"]
    deferred = sorted(e.target for e in events if e.kind == "deferred")
    assert len(deferred) == 35 and len(set(deferred)) == 35
    assert result.counts["idle"] == 40 and result.counts["deferred"] == 35


def test_zero_cap_defers_everything_and_duplicates_are_ignored():
    w = ws()
    result, events = run_scan([w, w], max_stops=0)
    assert result.stops == [] and [e.kind for e in events] == ["deferred", "deferred"]
    result, events = run_scan([w, w], max_stops=3)
    assert len(result.stops) == 1 and result.counts["idle"] == 1 and events == []


def test_reports_and_counts():
    rows = [ws("prebuilds", "p1"), ws("a", "u", last_used=None), ws("a", "busy", job="running"), ws("a", "s", transition="stop"),
            ws("b", "keep"), ws("b", "idle"), ws("b", "active", last_used=NOW)]
    result, events = run_scan(rows, policy=Policy(2 * H, parse_exempt("b/keep")), totals=True)
    assert {(e.kind, e.target) for e in events} == {("exempt", "workspace/prebuilds/p1"), ("unknown", "workspace/a/u"),
                                                    ("busy", "workspace/a/busy"), ("exempt", "workspace/b/keep")}
    assert [c.target for c in result.stops] == ["workspace/b/idle"]
    assert result.running_by_owner == {"a": 1, "b": 3}  # prebuilds never counted towards quotas
    assert result.total_by_owner == {"a": 3, "b": 3}
    v = quota_violations(result, max_total=2, max_running=2)
    assert [(a.target, a.details["quota"]) for a in v] == [("user/a", "workspaces"), ("user/b", "workspaces"), ("user/b", "running")]


def test_autostart_is_still_stopped_with_a_note():
    result, _ = run_scan([ws(autostart="CRON_TZ=Europe/Berlin 30 9 * * 1-5")])
    d = result.stops[0].details(NOW)
    assert "autostart" in d["note"] and d["autostart_schedule"].startswith("CRON_TZ")


def test_quota_stops_least_recently_used_down_to_limit():
    rows = [ws("a", f"w{i}", last_used=NOW - i * timedelta(minutes=10), completed=NOW - 10 * H) for i in range(6)]
    rows.append(ws("a", "keep", last_used=NOW - 50 * H))
    rows.append(ws("a", "unknown", last_used=None))
    policy = Policy(2 * H, parse_exempt("a/keep"))
    planned = {rows[5].id}  # w5 is already an idle stop... (50 min, not idle; pretend it was planned)
    qp = plan_quota_stops(rows, 3, planned, NOW, policy, keep=20)
    # 8 running, 1 planned, limit 3 -> 4 to stop, LRU among eligible (not keep/unknown/planned)
    assert qp.running == 8 and qp.excess == 4
    assert [c.name for c in qp.stops] == ["w4", "w3", "w2", "w1"] and qp.deferred == 0 and qp.unresolved == 0
    qp = plan_quota_stops(rows, 3, planned, NOW, policy, keep=2)
    assert [c.name for c in qp.stops] == ["w4", "w3"] and qp.deferred == 2
    qp = plan_quota_stops(rows, 0, set(), NOW, policy, keep=100)
    assert len(qp.stops) == 6 and qp.unresolved == 2
    assert plan_quota_stops(rows, 8, set(), NOW, policy, keep=5).stops == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 600), st.integers(0, 600),
                          st.sampled_from(["succeeded", "running", "failed"]), st.booleans()), max_size=60),
       st.integers(0, 10))
def test_scan_property_stops_are_oldest_idle_and_all_idle_reported_once(specs, cap):
    rows = [ws(f"u{o}", f"w{i}", last_used=NOW - timedelta(minutes=lu) if known else None,
               completed=NOW - timedelta(minutes=c), job=job) for i, (o, lu, c, job, known) in enumerate(specs)]
    result, events = run_scan(rows, max_stops=cap)
    idle = [w for w in rows if classify(w, NOW, POLICY).kind == "idle"]
    expect = sorted(idle, key=lambda w: (max(w.last_used, w.latest_build.job.completed_at), w.owner_name, w.name))[:cap]
    assert [c.id for c in result.stops] == [w.id for w in expect]
    deferred = [e.details["workspace_id"] for e in events if e.kind == "deferred"]
    assert sorted(deferred + [c.id for c in result.stops]) == sorted(w.id for w in idle)


def test_only_the_templates_credentials_secrets_belong_to_a_workspace():
    from jobs.reap_plan import credentials_secret_workspace

    wid = "5c7a3b0e-2f4d-4c61-9a57-0d6f1e2b3c4d"
    label = {"com.coder.workspace.id": wid}
    assert credentials_secret_workspace(f"coder-{wid}-credentials", label) == wid
    assert credentials_secret_workspace(f"coder-{wid.upper()}-credentials", {"com.coder.workspace.id": wid.upper()}) is None
    assert credentials_secret_workspace(f"coder-{wid}-credentials", {}) is None  # no label
    assert credentials_secret_workspace("codex-auth-0", label) is None  # a slot secret, not ours
    other = "6d8b4c1f-3a5e-4d72-8b68-1e7f2a3c4d5e"
    assert credentials_secret_workspace(f"coder-{other}-credentials", label) is None  # name and label disagree
    assert credentials_secret_workspace("coder-not-a-uuid-credentials", {"com.coder.workspace.id": "not-a-uuid"}) is None


def test_a_quota_stop_of_a_just_started_workspace_does_not_report_it_idle():
    started = ws("a", "fresh", last_used=NOW - 30 * H, completed=NOW - timedelta(minutes=3))
    idle = ws("a", "old", last_used=NOW - 30 * H, completed=NOW - 29 * H)

    qp = plan_quota_stops([started, idle], 0, set(), NOW, Policy(2 * H, parse_exempt(None)), keep=10)

    details = {c.name: c.details(NOW) for c in qp.stops}
    assert "idle_s" not in details["fresh"] and details["fresh"]["running_s"] == 180
    assert details["old"]["idle_s"] == 30 * 3600
