"""Plans: what a job intends to do, computed from observed state alone, shared by dry-run and apply.

Every job runs observe (I/O) -> plan (a pure function of what was observed, returning a `Plan`)
-> apply (the writes the plan names, nothing decided anew). `--dry-run` stops after the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    kind: str  # e.g. "create-first-user", "update-template", "stop", "nothing"
    target: str  # what it acts on, e.g. "template/ameide-dev"
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # shown with the action
    data: Any = field(default=None, compare=False, repr=False)  # what apply needs; never logged
    writes: bool = True  # False for what is only checked or reported (see `report`)
    warn: bool = False  # a finding an operator should look at

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind, "target": self.target}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.details)
        return out


def report(kind: str, target: str, reason: str = "", details: Mapping[str, Any] | None = None, *,
           warn: bool = False) -> Action:
    """An action that writes nothing: "nothing", a check, a finding (exempt, orphan, drift, ...)."""
    return Action(kind, target, reason, details or {}, writes=False, warn=warn)


@dataclass(frozen=True)
class Plan:
    """Every job's plan: its actions in the order apply takes them, and what was counted on the way."""

    actions: tuple[Action, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __add__(self, other: Plan) -> Plan:
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) + n
        return Plan(self.actions + other.actions, counts)

    def of_kind(self, *kinds: str) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    def kinds(self) -> list[str]:
        return [a.kind for a in self.actions]


def log_plan(log: Any, plan: Iterable[Action], dry_run: bool) -> None:
    """One `plan` event with every action; the console shows it as one line per action,
    "would ..." for each write in a dry run (jobs/log.py)."""
    actions = list(plan)
    log.info("plan", dry_run=dry_run, actions=[{**a.as_dict(), "writes": a.writes} for a in actions],
             writes=sum(a.writes for a in actions))


# One event per workspace (the console counts them on one line instead of printing each).
BULK_KINDS = frozenset({"deferred", "exempt", "unknown", "busy"})


def log_action(log: Any, action: Action, dry_run: bool, phase: str = "plan") -> None:
    """One event per action: the reaper's findings, logged as they are decided so that its memory
    stays flat in the number of workspaces, and its apply outcomes. A write planned in a dry run
    is "would <kind>"."""
    level = "warning" if action.warn else "info"
    event = f"would {action.kind}" if dry_run and action.writes and phase == "plan" else action.kind
    bulk = {"bulk": True} if action.kind in BULK_KINDS and phase == "plan" else {}
    getattr(log, level)(event, phase=phase, dry_run=dry_run, **action.as_dict(), **bulk)
