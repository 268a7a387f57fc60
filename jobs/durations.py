"""Human durations such as `2h`, `90m`, `1h30m`, `3600s` or a bare number of seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_MAX_SECONDS = 10 * 365 * 86400  # beyond ten years is a typo, not a policy


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ValueError with a readable reason."""
    raw = str(text).strip().lower()
    if not raw:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    else:
        pos, seconds = 0, 0.0
        for m in _PART.finditer(raw):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(raw) or pos == 0:
            raise ValueError(f"not a duration (use forms like 2h, 90m, 1h30m, 3600s): {text!r}")
    if seconds <= 0:
        raise ValueError("duration must be positive")
    if seconds > _MAX_SECONDS:
        raise ValueError("duration is longer than ten years")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return "".join(parts) or "0s"
