"""What every job's run() receives besides its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunContext:
    dry_run: bool
    log: Any
    flags: dict[str, Any] = field(default_factory=dict)
