"""Plans: what a job intends to do, computed from state alone, shared by dry-run and apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    kind: str  # e.g. "create-first-user", "update-template", "stop-workspace", "nothing"
    target: str  # what it acts on, e.g. "template/ameide-dev"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return self.kind not in {"nothing", "verify-credentials", "report"}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind, "target": self.target}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.details)
        return out


def log_plan(log: Any, actions: list[Action], dry_run: bool) -> None:
    """One `plan` event with every action; the console shows it as one line per action,
    "would ..." for each write in a dry run (jobs/log.py)."""
    log.info("plan", dry_run=dry_run, actions=[{**a.as_dict(), "writes": a.writes} for a in actions],
             writes=sum(a.writes for a in actions))
