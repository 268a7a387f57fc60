"""What every job's run() receives besides its settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RunContext:
    dry_run: bool
    log: Any
