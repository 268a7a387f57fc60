"""The demo's view of a job's JSON log: its events as the console format shows them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobs.log import Console


def render_console(events: Iterable[Mapping[str, Any]], *, width: int | None = None, times: bool = True) -> list[str]:
    """Lines as a terminal shows these (already redacted) events, parsed from a JSON log."""
    console = Console(width=width, times=times)
    lines: list[str] = []
    for event in events:
        if not console.is_bulk(event):
            lines += console.flush()
        lines += console.render(event)
    return lines + console.flush()
