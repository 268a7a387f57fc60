"""reap's plan: pure functions over what jobs/reap.py observed (coderd's workspaces, streamed,
and the workspace namespace's objects), ending in one `Plan`.

Memory stays flat in the number of workspaces: `Scan` sees one workspace at a time and
keeps only per-owner counters and a bounded max-heap of the `max_stops` oldest idle
workspaces. A candidate pushed out of the heap is reported as deferred right away (`add`
returns the findings it decided on, and the caller logs them at once), so every idle workspace
is reported exactly once, either as a stop or as deferred.

Idle (BEHAVIOR.md §7 "Guidance for a reaper"): the latest build is a succeeded `start`,
and both `last_used_at` and the build's `job.completed_at` are older than the idle-after.
`last_used_at` is not bumped by builds, so a workspace started a minute ago by its owner
still carries last week's value; the completed_at check keeps it running.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from jobs.models import ZERO_TIME, Workspace
from jobs.plan import Action, Plan, Report
from jobs.reap_rules import Policy

if TYPE_CHECKING:  # plain data from jobs.kube; the kubernetes package itself is not needed here
    from jobs.kube import ObjectMetadata, QuotaUsage

# coderd's system user that owns prebuilt workspaces (BEHAVIOR.md §7). Its workspaces are a
# pool Coder manages itself; stopping them would fight the prebuilds reconciler.
PREBUILDS_USER_ID = "c42fdf75-3097-471c-8c33-fb52454d81c0"
PREBUILDS_USERNAME = "prebuilds"
ACTIVE_JOB_STATUSES = frozenset({"pending", "running", "canceling"})
WORKSPACE_ID_LABEL = "com.coder.workspace.id"
QUOTA_WARN_RATIO = 0.9
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ORPHAN_COUNTER = {"pod": "orphans", "deployment": "orphan_deployments", "secret": "orphan_secrets"}

# What a reap pass reports and never writes; the per-workspace ones are logged as the listing streams by.
Finding = Report[Literal["deferred", "exempt", "unknown", "busy", "quota-unresolved", "kube-check-failed", "quota-usage",
                         "quota-usage-high", "unlabelled"]]
ObjectKind = Literal["pod", "deployment", "secret"]


@dataclass(frozen=True, kw_only=True)
class Stop(Action):
    """Post a stop build for `candidate`, once a fresh read still finds it stoppable for `reason`
    (idle or quota)."""

    kind: Literal["stop"] = field(default="stop", init=False)
    candidate: Candidate


@dataclass(frozen=True, kw_only=True)
class QuotaViolation(Report[Literal["quota-violation"]]):
    kind: Literal["quota-violation"] = field(default="quota-violation", init=False)
    warn: bool = field(default=True, init=False)
    owner: str
    quota: Literal["workspaces", "running"]


@dataclass(frozen=True, kw_only=True)
class DeleteOrphan(Action):
    """An object of a workspace that coderd does not know or has stopped. Reported always, and
    deleted (`writes`) only with --delete-orphans; the uid guards a same-named successor."""

    kind: Literal["orphan"] = field(default="orphan", init=False)
    warn: bool = field(default=True, init=False)
    resource: ObjectKind
    name: str
    uid: str | None
    workspace_id: str


ReapAction = Stop | QuotaViolation | DeleteOrphan | Finding


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def is_prebuild(ws: Workspace) -> bool:
    return ws.owner_id == PREBUILDS_USER_ID or ws.owner_name.lower() == PREBUILDS_USERNAME


def build_active(ws: Workspace) -> bool:
    return ws.latest_build.job.status in ACTIVE_JOB_STATUSES


def is_running(ws: Workspace) -> bool:
    """coderd's `status:running`: the latest build is a succeeded start."""
    b = ws.latest_build
    return b.transition == "start" and b.job.status == "succeeded"


def is_stopped(ws: Workspace) -> bool:
    b = ws.latest_build
    return b.transition in ("stop", "delete") and b.job.status == "succeeded"


def credentials_secret_workspace(name: str, labels: dict[str, str]) -> str | None:
    """The workspace id of one of the templates' credentials Secrets (`coder-<id>-credentials`,
    labelled with that id, modules/workspace/main.tf), else None: such a Secret is never deleted."""
    wid = str(labels.get(WORKSPACE_ID_LABEL, "")).lower()
    if not _UUID.match(wid) or name != f"coder-{wid}-credentials":
        return None
    return wid


def target(ws: Workspace) -> str:
    return f"workspace/{ws.owner_name}/{ws.name}"


@dataclass(frozen=True, order=True)
class Candidate:
    """A running workspace that may be stopped. Ordered oldest first (then by name, for determinism)."""

    idle_since: datetime
    owner: str
    name: str
    id: str = field(compare=True)
    template: str = field(default="", compare=False)
    last_used: datetime | None = field(default=None, compare=False)
    completed_at: datetime | None = field(default=None, compare=False)
    idle_after: timedelta = field(default=timedelta(0), compare=False)
    source: str = field(default="default", compare=False)
    autostart_schedule: str | None = field(default=None, compare=False)
    dormant: bool = field(default=False, compare=False)
    idle: bool = field(default=True, compare=False)  # False: stopped for a quota although in use or just started

    @property
    def target(self) -> str:
        return f"workspace/{self.owner}/{self.name}"

    def details(self, now: datetime) -> dict[str, object]:
        out: dict[str, object] = {
            "workspace_id": self.id,
            "owner": self.owner,
            "template": self.template,
            "last_used_at": _iso(self.last_used),
            "build_completed_at": _iso(self.completed_at),
            "idle_after_s": int(self.idle_after.total_seconds()),
            "policy": self.source,
        }
        if self.idle:
            out["idle_s"] = int((now - self.idle_since).total_seconds())
        elif self.completed_at is not None:
            # Not idle: how long it has run says why it was picked without calling it idle.
            out["running_s"] = int((now - self.completed_at).total_seconds())
        if self.autostart_schedule:
            # We still stop it: coderd's autostart will start it at its next scheduled time
            # (BEHAVIOR.md §7), which is what its owner asked for; until then it idles for nothing.
            out["autostart_schedule"] = self.autostart_schedule
            out["note"] = "has an autostart schedule: coderd will start it again at the next scheduled time"
        if self.dormant:
            out["dormant"] = True
        return out


def candidate(ws: Workspace, idle_since: datetime, idle_after: timedelta, source: str, idle: bool = True) -> Candidate:
    return Candidate(
        idle_since=idle_since, owner=ws.owner_name, name=ws.name, id=ws.id, template=ws.template_name,
        last_used=ws.last_used, completed_at=_completed(ws), idle_after=idle_after, source=source,
        autostart_schedule=ws.autostart_schedule or None, dormant=ws.dormant_at is not None, idle=idle,
    )


def _completed(ws: Workspace) -> datetime | None:
    done = ws.latest_build.job.completed_at
    if done is None or done <= ZERO_TIME:
        return None
    return done


@dataclass(frozen=True)
class Verdict:
    kind: str  # prebuild | busy | not-running | exempt | unknown | active | idle
    reason: str = ""
    idle_since: datetime | None = None
    idle_after: timedelta | None = None
    source: str = ""


def classify(ws: Workspace, now: datetime, policy: Policy) -> Verdict:
    """Why this workspace is or is not a stop candidate. Order matters: the safest reason first."""
    if is_prebuild(ws):
        return Verdict("prebuild", "owned by the prebuilds system user; coderd manages that pool")
    if build_active(ws):
        return Verdict("busy", f"latest build ({ws.latest_build.transition}) is {ws.latest_build.job.status}")
    if not is_running(ws):
        return Verdict("not-running", f"latest build is {ws.latest_build.transition}/{ws.latest_build.job.status}")
    decision = policy.decide(ws.owner_name, ws.name, ws.template_name)
    if decision.exempt:
        return Verdict("exempt", f"exempt by {decision.source}", source=decision.source)
    last_used, completed = ws.last_used, _completed(ws)
    if last_used is None:
        return Verdict("unknown", "last_used_at is unknown (zero or absent)", source=decision.source)
    if completed is None:
        return Verdict("unknown", "latest build has no completed_at", source=decision.source)
    threshold = now - decision.idle_after
    if last_used < threshold and completed < threshold:
        return Verdict("idle", "unused for longer than idle-after", max(last_used, completed), decision.idle_after,
                       decision.source)
    return Verdict("active", "", idle_after=decision.idle_after, source=decision.source)


def recheck(ws: Workspace | None, now: datetime, policy: Policy, reason: str) -> str | None:
    """Right before a stop, with the workspace read again: None when the stop still stands, else
    why not (the listing may be minutes old at scale, and a stop build cannot be undone)."""
    if ws is None:
        return "gone"
    v = classify(ws, now, policy)
    if v.kind == "busy":
        return "busy"
    if reason == "idle" and v.kind != "idle":
        return f"no longer idle ({v.kind})"
    if reason == "quota" and (v.kind not in ("idle", "active") or not is_running(ws)):
        return f"no longer stoppable ({v.kind})"
    return None


@dataclass
class ScanResult:
    now: datetime
    stops: list[Candidate]  # oldest idle first, at most max_stops
    counts: Counter[str]
    running_by_owner: Counter[str]
    total_by_owner: Counter[str] | None  # None when totals were not counted


_FINDING_OF: dict[str, Literal["exempt", "unknown", "busy"]] = {
    "prebuild": "exempt", "exempt": "exempt", "unknown": "unknown", "busy": "busy"}


class Scan:
    """Feed every listed workspace to `add`; `finish` returns the bounded stop list.

    `add` returns the findings it decided on (exempt, unknown, busy, deferred) for the caller to
    report at once, so nothing per-workspace is retained beyond the heap.
    """

    def __init__(self, now: datetime, policy: Policy, max_stops: int, *, count_totals: bool = False) -> None:
        self.now = now
        self.policy = policy
        self.max_stops = max_stops
        self.counts: Counter[str] = Counter()
        self.running_by_owner: Counter[str] = Counter()
        self.total_by_owner: Counter[str] | None = Counter() if count_totals else None
        self._heap: list[tuple[Any, ...]] = []  # max-heap on age: (-idle_since_ts, neg name keys..., candidate)
        self._in_heap: set[str] = set()

    def add(self, ws: Workspace) -> list[Finding]:
        self.counts["scanned"] += 1
        prebuild = is_prebuild(ws)
        if self.total_by_owner is not None and not prebuild:
            self.total_by_owner[ws.owner_name] += 1
        if is_running(ws):
            self.counts["running"] += 1
            if not prebuild:
                self.running_by_owner[ws.owner_name] += 1
        v = classify(ws, self.now, self.policy)
        if v.kind == "not-running":
            return []
        if v.kind == "active":
            self.counts["active"] += 1
            return []
        if v.kind == "idle":
            assert v.idle_since is not None and v.idle_after is not None
            self.counts["idle"] += 1
            return self._offer(candidate(ws, v.idle_since, v.idle_after, v.source))
        kind = _FINDING_OF[v.kind]
        self.counts[kind] += 1
        details: dict[str, object] = {"workspace_id": ws.id, "owner": ws.owner_name, "template": ws.template_name}
        if kind == "unknown":
            details["last_used_at"] = _iso(ws.last_used_at)
        if v.source:
            details["policy"] = v.source
        return [Finding(kind=kind, target=target(ws), reason=v.reason, details=details)]

    def _offer(self, c: Candidate) -> list[Finding]:
        if c.id in self._in_heap:  # the same row seen twice across shifting pages
            self.counts["idle"] -= 1
            return []
        key = (-c.idle_since.timestamp(), _neg(c.owner), _neg(c.name), _neg(c.id))
        if len(self._heap) < self.max_stops:
            heapq.heappush(self._heap, (key, c))
            self._in_heap.add(c.id)
            return []
        if self._heap and key > self._heap[0][0]:  # older than the youngest kept: swap
            _, out = heapq.heapreplace(self._heap, (key, c))
            self._in_heap.discard(out.id)
            self._in_heap.add(c.id)
        else:
            out = c
        self.counts["deferred"] += 1
        return [Finding(kind="deferred", target=out.target, details=out.details(self.now),
                        reason=f"over REAP_MAX_STOPS={self.max_stops} this run; younger idle than the stops")]

    def finish(self) -> ScanResult:
        stops = sorted(c for _, c in self._heap)
        return ScanResult(self.now, stops, self.counts, self.running_by_owner, self.total_by_owner)


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts strings in reverse, for the max-heap tie-break."""
    return tuple(-ord(ch) for ch in text) + (1,)


def quota_violations(result: ScanResult, max_total: int | None, max_running: int | None) -> list[QuotaViolation]:
    """One report action per owner and limit exceeded, sorted by owner."""
    out: list[QuotaViolation] = []
    if max_total is not None and result.total_by_owner is not None:
        for owner, n in sorted(result.total_by_owner.items()):
            if n > max_total:
                out.append(QuotaViolation(
                    target=f"user/{owner}", reason=f"{n} workspaces > REAP_MAX_WORKSPACES_PER_USER={max_total}",
                    details={"owner": owner, "quota": "workspaces", "count": n, "limit": max_total},
                    owner=owner, quota="workspaces"))
    if max_running is not None:
        for owner, n in sorted(result.running_by_owner.items()):
            if n > max_running:
                out.append(QuotaViolation(
                    target=f"user/{owner}", reason=f"{n} running > REAP_MAX_RUNNING_PER_USER={max_running}",
                    details={"owner": owner, "quota": "running", "count": n, "limit": max_running},
                    owner=owner, quota="running"))
    return out


def plan_quota_stops(
    owner_running: Iterable[Workspace],
    limit: int,
    planned_ids: set[str],
    now: datetime,
    policy: Policy,
    keep: int,
) -> QuotaPlan:
    """Least recently used running workspaces of one owner to stop, down to `limit`.

    `owner_running` is that owner's running workspaces, read afresh; those already planned as
    idle stops count as stopped. Exempt, prebuild, busy and unknown-last-used workspaces are
    never chosen (they still count as running). Only the `keep` least recently used eligible
    ones are held in memory (`keep` = what is left of REAP_MAX_STOPS).
    """
    running = already = 0
    pool: list[tuple[Any, Candidate]] = []  # max-heap on recency: heap[0] is the most recently used kept
    seen: set[str] = set()
    eligible = 0
    for ws in owner_running:
        if ws.id in seen or not is_running(ws):
            continue
        seen.add(ws.id)
        running += 1
        if ws.id in planned_ids:
            already += 1
            continue
        v = classify(ws, now, policy)
        last = ws.last_used
        if v.kind not in ("idle", "active") or last is None:
            continue
        eligible += 1
        if keep <= 0:
            continue
        c = candidate(ws, last, v.idle_after or policy.idle_after, v.source, idle=v.kind == "idle")
        key = (-last.timestamp(), _neg(ws.name), _neg(ws.id))
        if len(pool) < keep:
            heapq.heappush(pool, (key, c))
        elif key > pool[0][0]:
            heapq.heapreplace(pool, (key, c))
    excess = max(0, running - already - limit)
    chosen = sorted((c for _, c in pool), key=lambda c: (c.idle_since, c.name, c.id))[:excess]
    stoppable = min(excess, eligible)
    return QuotaPlan(chosen, running, excess, deferred=stoppable - len(chosen), unresolved=excess - stoppable)


@dataclass(frozen=True)
class QuotaPlan:
    stops: list[Candidate]  # least recently used first
    running: int  # running workspaces of the owner in the fresh listing
    excess: int  # running - planned idle stops - limit
    deferred: int  # could be stopped, but REAP_MAX_STOPS is used up
    unresolved: int  # cannot be stopped: exempt, busy or unknown last_used_at


def quota_stop_plans(violations: list[QuotaViolation], owner_running: Callable[[str], Iterable[Workspace]], scan: ScanResult,
                     policy: Policy, limit: int, max_stops: int) -> list[tuple[str, QuotaPlan]]:
    """Quota stops for each owner over REAP_MAX_RUNNING_PER_USER, in owner order, sharing what is left
    of REAP_MAX_STOPS after the idle stops. `owner_running(owner)` streams that owner's running
    workspaces as read afresh (jobs/reap.py hands coderd's pager)."""
    planned = {c.id for c in scan.stops}
    remaining = max_stops - len(scan.stops)
    out: list[tuple[str, QuotaPlan]] = []
    for v in violations:
        if v.quota != "running":
            continue
        qp = plan_quota_stops(owner_running(v.owner), limit, planned, scan.now, policy, keep=max(0, remaining))
        planned.update(c.id for c in qp.stops)
        remaining -= len(qp.stops)
        out.append((v.owner, qp))
    return out


# -- the workspace namespace ---------------------------------------------------------------
@dataclass(frozen=True)
class Cluster:
    """What reap observed in the workspace namespace, and coderd's view of the workspaces named there."""

    namespace: str
    usage: list[QuotaUsage] | None  # None: the ResourceQuotas could not be listed (usage_error says why)
    objects: list[tuple[ObjectKind, ObjectMetadata]]  # as listed
    live: Mapping[str, Workspace]  # by lower-case id
    usage_error: str = ""


def object_workspace(kind: str, meta: ObjectMetadata) -> str | None:
    """The workspace an object belongs to, or None: such an object is never deleted."""
    if kind == "secret":
        return credentials_secret_workspace(meta.name, dict(meta.labels))
    wid = str(meta.labels.get(WORKSPACE_ID_LABEL, "")).lower()
    return wid if _UUID.match(wid) else None


def workspace_ids(objects: Iterable[tuple[ObjectKind, ObjectMetadata]]) -> list[str]:
    """The workspaces coderd is asked about."""
    return sorted({wid for kind, meta in objects if (wid := object_workspace(kind, meta)) is not None})


_DELETE_ORDER = {"deployment": 0, "pod": 1, "secret": 2}  # controllers first, the credentials last


def cluster_findings(cluster: Cluster, *, delete_orphans: bool) -> tuple[list[Finding | DeleteOrphan], Counter[str]]:
    """Quota usage, unlabelled objects, and orphans: objects of a workspace coderd does not know or
    has stopped. Orphans are deleted (written) only with delete_orphans, Deployments first so that
    their ReplicaSets do not recreate the pods deleted next."""
    ns = cluster.namespace
    actions: list[Finding | DeleteOrphan] = []
    counts: Counter[str] = Counter()
    if cluster.usage is None:
        counts["failed"] += 1
        actions.append(Finding(kind="kube-check-failed", target=f"resourcequotas/{ns}", reason=cluster.usage_error))
    for u in cluster.usage or []:
        high = u.ratio >= QUOTA_WARN_RATIO
        counts["kube_quota_warnings"] += high
        actions.append(Finding(
            kind="quota-usage-high" if high else "quota-usage", target=f"resourcequota/{u.namespace}/{u.name}",
            reason=f"{u.resource} at {u.ratio:.0%} of hard" if high else "", warn=high,
            details={"resource": u.resource, "used": u.used, "hard": u.hard, "percent": round(u.ratio * 100, 1)}))
    by_id: dict[str, list[tuple[ObjectKind, ObjectMetadata]]] = {}
    for kind, meta in cluster.objects:
        wid = object_workspace(kind, meta)
        if wid is not None:
            by_id.setdefault(wid, []).append((kind, meta))
        elif kind == "secret":
            actions.append(Finding(kind="unlabelled", target=f"secret/{ns}/{meta.name}",
                                   reason=f"not a credentials Secret (coder-<{WORKSPACE_ID_LABEL}>-credentials); never deleted"))
        else:
            actions.append(Finding(kind="unlabelled", target=f"{kind}/{ns}/{meta.name}",
                                   reason=f"no valid {WORKSPACE_ID_LABEL} label; never deleted"))
    orphans: list[DeleteOrphan] = []
    for wid in sorted(by_id):
        ws = cluster.live.get(wid)
        if ws is not None and not is_stopped(ws):
            continue
        why = "no such workspace in coderd (deleted, or the database was reset)" if ws is None else \
            f"workspace {ws.owner_name}/{ws.name} is stopped"
        for kind, meta in by_id[wid]:
            counts[_ORPHAN_COUNTER[kind]] += 1
            orphans.append(DeleteOrphan(target=f"{kind}/{ns}/{meta.name}", reason=why, details={"workspace_id": wid},
                                        writes=delete_orphans, resource=kind, name=meta.name, uid=meta.uid, workspace_id=wid))
    orphans.sort(key=lambda a: _DELETE_ORDER[a.resource])
    actions += orphans
    return actions, counts


# -- the plan ------------------------------------------------------------------------------
def plan(scan: ScanResult, violations: list[QuotaViolation], quota: list[tuple[str, QuotaPlan]], cluster: Cluster | None, *,
         max_stops: int, running_limit: int | None, delete_orphans: bool) -> Plan[ReapAction]:
    """Every action of the pass, in the order apply takes them: the idle stops, the quota reports
    and stops, then what the workspace namespace holds. Counts what was looked at on the way."""
    counts = Counter(scan.counts)
    actions: list[ReapAction] = [Stop(target=c.target, reason="idle", details=c.details(scan.now), candidate=c)
                                 for c in scan.stops]
    actions += violations
    counts["quota_violations"] += len(violations)
    quota_stops = 0
    for owner, qp in quota:
        actions += [Stop(target=c.target, reason="quota", candidate=c,
                         details={**c.details(scan.now), "running": qp.running, "limit": running_limit}) for c in qp.stops]
        quota_stops += len(qp.stops)
        if qp.deferred:
            counts["deferred"] += qp.deferred
            actions.append(Finding(kind="deferred", target=f"user/{owner}", reason=f"quota stops over REAP_MAX_STOPS={max_stops}",
                                   details={"owner": owner, "count": qp.deferred}))
        if qp.unresolved:
            actions.append(Finding(
                kind="quota-unresolved", target=f"user/{owner}", warn=True,
                reason="running over the limit, but the rest are exempt, busy or of unknown use",
                details={"owner": owner, "count": qp.unresolved, "running": qp.running, "limit": running_limit}))
    counts["planned_stops"] += len(scan.stops) + quota_stops
    counts["quota_stops"] += quota_stops
    if cluster is not None:
        found, cluster_counts = cluster_findings(cluster, delete_orphans=delete_orphans)
        actions += found
        counts.update(cluster_counts)
    return Plan(tuple(actions), dict(counts))
