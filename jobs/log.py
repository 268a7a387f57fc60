"""structlog set-up: one JSON object per line (or a console renderer on a terminal),
with a redaction step that runs last before rendering, over every event and exception.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"pass(word)?|token|secret|authorization|cookie|credential|api[_-]?key", re.I)
_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never be printed, wherever they turn up."""
    for value in values:
        if value and len(value) >= 4:  # shorter values would redact ordinary words
            _secrets.add(value)
            stripped = value.strip()
            if stripped and stripped != value and len(stripped) >= 4:
                _secrets.add(stripped)


def clear_secrets() -> None:
    _secrets.clear()


def redact_text(text: str) -> str:
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any, key: str | None = None) -> Any:
    if key is not None and _SECRET_KEY.search(key) and value not in (None, "", False, True):
        if not isinstance(value, (int, float)):
            return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_redact(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return redact_text(str(value))


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: (_redact(v, k) if k != "event" else _redact(v)) for k, v in event_dict.items()}


def configure(fmt: str | None = None, stream: TextIO | None = None, job: str | None = None) -> None:
    stream = stream or sys.stdout
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if job:
        structlog.contextvars.bind_contextvars(job=job)


def get_logger(**fields: Any) -> Any:
    return structlog.get_logger().bind(**fields)
