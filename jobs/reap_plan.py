"""The reaper's decisions, as pure functions over workspaces streamed from coderd.

Memory stays flat in the number of workspaces: `Scan` sees one workspace at a time and
keeps only per-owner counters and a bounded max-heap of the `max_stops` oldest idle
workspaces. A candidate pushed out of the heap is reported as deferred right away, so every
idle workspace is reported exactly once, either as a stop or as deferred.

Idle (BEHAVIOR.md §7 "Guidance for a reaper"): the latest build is a succeeded `start`,
and both `last_used_at` and the build's `job.completed_at` are older than the idle-after.
`last_used_at` is not bumped by builds, so a workspace started a minute ago by its owner
still carries last week's value; the completed_at check keeps it running.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from jobs.plan import Action
from jobs.models import ZERO_TIME, Workspace
from jobs.reap_rules import Policy

# coderd's system user that owns prebuilt workspaces (BEHAVIOR.md §7). Its workspaces are a
# pool Coder manages itself; stopping them would fight the prebuilds reconciler.
PREBUILDS_USER_ID = "c42fdf75-3097-471c-8c33-fb52454d81c0"
PREBUILDS_USERNAME = "prebuilds"
ACTIVE_JOB_STATUSES = frozenset({"pending", "running", "canceling"})
WORKSPACE_ID_LABEL = "com.coder.workspace.id"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

Emit = Callable[[Action], None]


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

    @property
    def target(self) -> str:
        return f"workspace/{self.owner}/{self.name}"

    def details(self, now: datetime) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workspace_id": self.id,
            "owner": self.owner,
            "template": self.template,
            "last_used_at": _iso(self.last_used),
            "build_completed_at": _iso(self.completed_at),
            "idle_s": int((now - self.idle_since).total_seconds()),
            "idle_after_s": int(self.idle_after.total_seconds()),
            "policy": self.source,
        }
        if self.autostart_schedule:
            # We still stop it: coderd's autostart will start it at its next scheduled time
            # (BEHAVIOR.md §7), which is what its owner asked for; until then it idles for nothing.
            out["autostart_schedule"] = self.autostart_schedule
            out["note"] = "has an autostart schedule: coderd will start it again at the next scheduled time"
        if self.dormant:
            out["dormant"] = True
        return out


def candidate(ws: Workspace, idle_since: datetime, idle_after: timedelta, source: str) -> Candidate:
    return Candidate(
        idle_since=idle_since, owner=ws.owner_name, name=ws.name, id=ws.id, template=ws.template_name,
        last_used=ws.last_used, completed_at=_completed(ws), idle_after=idle_after, source=source,
        autostart_schedule=ws.autostart_schedule or None, dormant=ws.dormant_at is not None,
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


@dataclass
class ScanResult:
    now: datetime
    stops: list[Candidate]  # oldest idle first, at most max_stops
    counts: Counter
    running_by_owner: Counter
    total_by_owner: Counter | None  # None when totals were not counted


class Scan:
    """Feed every listed workspace to `add`; `finish` returns the bounded stop list.

    `emit` receives report actions (exempt, unknown, deferred, busy) as they are decided,
    so nothing per-workspace is retained beyond the heap.
    """

    def __init__(self, now: datetime, policy: Policy, max_stops: int, emit: Emit, *, count_totals: bool = False) -> None:
        self.now = now
        self.policy = policy
        self.max_stops = max_stops
        self.emit = emit
        self.counts: Counter = Counter()
        self.running_by_owner: Counter = Counter()
        self.total_by_owner: Counter | None = Counter() if count_totals else None
        self._heap: list[tuple[Any, ...]] = []  # max-heap on age: (-idle_since_ts, neg name keys..., candidate)
        self._in_heap: set[str] = set()

    def add(self, ws: Workspace) -> None:
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
            return
        if v.kind == "active":
            self.counts["active"] += 1
            return
        if v.kind == "idle":
            assert v.idle_since is not None and v.idle_after is not None
            self.counts["idle"] += 1
            self._offer(candidate(ws, v.idle_since, v.idle_after, v.source))
            return
        kind = {"prebuild": "exempt", "exempt": "exempt", "unknown": "unknown", "busy": "busy"}[v.kind]
        self.counts[kind] += 1
        details: dict[str, Any] = {"workspace_id": ws.id, "owner": ws.owner_name, "template": ws.template_name}
        if kind == "unknown":
            details["last_used_at"] = _iso(ws.last_used_at)
        if v.source:
            details["policy"] = v.source
        self.emit(Action(kind, target(ws), v.reason, details))

    def _offer(self, c: Candidate) -> None:
        if c.id in self._in_heap:  # the same row seen twice across shifting pages
            self.counts["idle"] -= 1
            return
        key = (-c.idle_since.timestamp(), _neg(c.owner), _neg(c.name), _neg(c.id))
        if len(self._heap) < self.max_stops:
            heapq.heappush(self._heap, (key, c))
            self._in_heap.add(c.id)
            return
        if self._heap and key > self._heap[0][0]:  # older than the youngest kept: swap
            _, out = heapq.heapreplace(self._heap, (key, c))
            self._in_heap.discard(out.id)
            self._in_heap.add(c.id)
        else:
            out = c
        self._defer(out)

    def _defer(self, c: Candidate) -> None:
        self.counts["deferred"] += 1
        self.emit(Action("deferred", c.target, f"over REAP_MAX_STOPS={self.max_stops} this run; younger idle than the stops",
                         c.details(self.now)))

    def finish(self) -> ScanResult:
        stops = sorted(c for _, c in self._heap)
        return ScanResult(self.now, stops, self.counts, self.running_by_owner, self.total_by_owner)


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts strings in reverse, for the max-heap tie-break."""
    return tuple(-ord(ch) for ch in text) + (1,)


def stop_actions(stops: Iterable[Candidate], now: datetime, reason: str = "idle") -> list[Action]:
    return [Action("stop", c.target, reason, c.details(now)) for c in stops]


def quota_violations(result: ScanResult, max_total: int | None, max_running: int | None) -> list[Action]:
    """One report action per owner and limit exceeded, sorted by owner."""
    out: list[Action] = []
    if max_total is not None and result.total_by_owner is not None:
        for owner, n in sorted(result.total_by_owner.items()):
            if n > max_total:
                out.append(Action("quota-violation", f"user/{owner}", f"{n} workspaces > REAP_MAX_WORKSPACES_PER_USER={max_total}",
                                  {"owner": owner, "quota": "workspaces", "count": n, "limit": max_total}))
    if max_running is not None:
        for owner, n in sorted(result.running_by_owner.items()):
            if n > max_running:
                out.append(Action("quota-violation", f"user/{owner}", f"{n} running > REAP_MAX_RUNNING_PER_USER={max_running}",
                                  {"owner": owner, "quota": "running", "count": n, "limit": max_running}))
    return out


def plan_quota_stops(
    owner_running: Iterable[Workspace],
    limit: int,
    planned_ids: set[str],
    now: datetime,
    policy: Policy,
    keep: int,
) -> "QuotaPlan":
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
        c = candidate(ws, last, v.idle_after or policy.idle_after, v.source)
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
