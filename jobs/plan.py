"""Plans: what a job intends to do, computed from observed state alone, shared by dry-run and apply.

Every job runs observe (I/O) -> plan (a pure function of what was observed, returning a `Plan`)
-> apply (the writes the plan names, nothing decided anew). `--dry-run` stops after the plan.

Each job's actions are a closed set of `Action` subclasses, one per kind, carrying what apply
needs as typed fields; the job's plan is a `Plan` of their union, and its apply `match`es them
with `typing.assert_never` in the last case, so mypy proves every kind is handled. What the log
shows is the description every action has (kind, target, reason, details), never its fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(frozen=True, kw_only=True)
class Action:
    """The description every action has. A subclass fixes `kind` (a `Literal` default that
    `__init__` does not take) and adds the typed fields its apply reads."""

    kind: str  # e.g. "create-first-user", "update-template", "stop", "nothing"
    target: str  # what it acts on, e.g. "template/ameide-dev"
    reason: str = ""
    details: Mapping[str, object] = field(default_factory=dict)  # shown with the action
    writes: bool = True  # False for what is only checked or reported (see `Report`)
    warn: bool = False  # a finding an operator should look at

    def as_dict(self) -> dict[str, object]:
        """The description as logged: a JSON object with `action`, `target`, `reason` and the details."""
        out: dict[str, object] = {"action": self.kind, "target": self.target}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.details)
        return out


K = TypeVar("K", bound=str)


@dataclass(frozen=True, kw_only=True)
class Report(Action, Generic[K]):
    """An action that writes nothing and that apply has nothing to do for: "nothing", a finding
    (exempt, orphan, drift, ...). `K` is the job's `Literal` of report kinds."""

    kind: K
    writes: bool = field(default=False, init=False)


A = TypeVar("A", bound=Action, covariant=True)
B = TypeVar("B", bound=Action)
T = TypeVar("T", bound=Action)


@dataclass(frozen=True)
class Plan(Generic[A]):
    """Every job's plan: its actions in the order apply takes them, and what was counted on the way."""

    actions: tuple[A, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[A]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def __add__(self, other: Plan[B]) -> Plan[A | B]:
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) + n
        return Plan((*self.actions, *other.actions), counts)

    @property
    def writes(self) -> int:
        """How many of its actions write (would write, in a dry run)."""
        return sum(a.writes for a in self.actions)

    def of_type(self, kind: type[T]) -> list[T]:
        return [a for a in self.actions if isinstance(a, kind)]


def log_plan(log: Any, plan: Plan[Action], dry_run: bool) -> None:
    """One `plan` event with every action; the console shows it as one line per action,
    "would ..." for each write in a dry run (jobs/log.py)."""
    log.info("plan", dry_run=dry_run, actions=[{**a.as_dict(), "writes": a.writes} for a in plan],
             writes=plan.writes)


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
