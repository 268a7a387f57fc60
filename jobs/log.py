"""structlog set-up: one JSON object per line, or a console rendering for a person, with a
redaction step that runs last before rendering, over every event and exception.

Info goes to stdout, warnings and errors to stderr (in both formats), so `2>` keeps what
needs attention. The console rendering is built for reading, the JSON for machines:
- one line per event, capped at the terminal's width for info (warnings and errors are never
  cut: they carry the cause and what to check);
- a `plan` event becomes one line per action ("would ..." in a dry run);
- events marked `bulk=True` (one of many alike, e.g. the reaper's deferred workspaces) are
  counted and shown as one line per kind and reason; the JSON keeps every one;
- a `summary` event (see `summary()`) becomes a small table.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(r"pass(word)?|token|secret|authorization|cookie|credential|api[_-]?key", re.I)
_secrets: set[str] = set()
# Keys known to hold no secret although their name sounds like one: the non-secret settings, such
# as EXTERNAL_AUTH_TARGET_SECRET (a Secret's *name*). Redaction is by value; the name rule above is
# only a net for fields nobody registered.
_public_keys: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never be printed, wherever they turn up."""
    for value in values:
        if value and len(value) >= 4:  # shorter values would redact ordinary words
            _secrets.add(value)
            stripped = value.strip()
            if stripped and stripped != value and len(stripped) >= 4:
                _secrets.add(stripped)


def register_public_keys(keys: Iterable[str]) -> None:
    """Field names whose values are not secret (the settings' non-secret variables)."""
    _public_keys.update(keys)


def clear_secrets() -> None:
    _secrets.clear()
    _public_keys.clear()


def redact_text(text: str) -> str:
    # Longest first, so a secret that contains another is removed whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any, key: str | None = None) -> Any:
    if key is not None and key not in _public_keys and _SECRET_KEY.search(key) and value not in (None, "", False, True):
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


def redact_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: (_redact(v, k) if k != "event" else _redact(v)) for k, v in event_dict.items()}


# ------------------------------------------------------------------------------------ summary

HEADLINE = ("checked", "changed", "deferred", "failed")


def summary(log: Any, *, checked: int, changed: int, deferred: int = 0, failed: int = 0, **fields: Any) -> None:
    """The closing event of a job: what it checked, changed (would change, with `dry_run=True`),
    deferred to a later run, and failed. `columns={name: count}` adds counts to the console
    table; other `fields` go to the JSON only. (Only ints are named here, so a job can pass its
    own counter dict with `**`.)"""
    extra = dict(fields.pop("columns", None) or {})
    fields.setdefault("dry_run", False)
    # A dry run changed nothing: its count is under its own key, so no reader takes it for writes.
    key = "would_change" if fields["dry_run"] else "changed"
    headline = [key if h == "changed" else h for h in HEADLINE]
    log.info("summary", checked=checked, **{key: changed}, deferred=deferred, failed=failed, **extra,
             table=[*headline, *extra], **fields)


# ------------------------------------------------------------------------------------ console

# Known to the reader from elsewhere on the line, or only useful to machines.
_HIDDEN = {"timestamp", "level", "event", "job", "component", "phase", "dry_run", "bulk", "table"}
_SHA = re.compile(r"\b(sha256:[0-9a-f]{12})[0-9a-f]{52}\b")
_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|\+00:00)$")
_LEVELS = {"debug": "debug", "info": "info ", "warning": "warn ", "error": "error", "critical": "error"}
_COLORS = {"warning": "\033[33m", "error": "\033[31m", "critical": "\033[31m"}
_DIM, _RESET = "\033[2m", "\033[0m"
_LONG_VALUE = 80  # longer info values are cut; the JSON log has them whole
_SHORT_VALUE = 24  # values up to this long are shown first, so a width cap cuts identifiers, not facts


def human_seconds(seconds: float) -> str:
    """12m, 2h, 29.9h, 0.4s: how long, at the precision a person compares."""
    s = float(seconds)
    if s < 120:
        return f"{s:.1f}s" if s < 10 and s != int(s) else f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}".removesuffix(".0") + "h"


def _value(key: str, value: Any, cut: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        items = [_value(key, v, cut) for v in value]
        if cut and len(items) > 4:
            items = items[:3] + [f"+{len(items) - 3} more"]
        return ",".join(items)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(str(k), v, cut)}" for k, v in value.items()) + "}"
    if isinstance(value, (int, float)) and key.endswith("_s"):
        return human_seconds(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a timeout of 30.0 seconds reads as 30
    text = str(value)
    iso = _ISO.match(text)
    if iso:
        return iso.group(1) + "Z"
    text = _SHA.sub(r"\1", text)
    if cut and len(text) > _LONG_VALUE:
        text = text[:_LONG_VALUE - 1] + "…"
    return f'"{text}"' if (" " in text or not text) else text


def _fields(event: Mapping[str, Any], text: str, cut: bool) -> list[str]:
    shown = []
    for key, value in event.items():
        if key in _HIDDEN or value is None or key == "exception":
            continue
        if key in ("action", "target") and isinstance(value, str) and value in text:
            continue  # already in the message
        name = key[:-2] if key.endswith("_s") and isinstance(value, (int, float)) else key
        shown.append((key, f"{name}={_value(key, value, cut)}"))
    first = [s for k, s in shown if k in ("target", "reason")]
    rest = [s for k, s in shown if k not in ("target", "reason")]
    return first + sorted(rest, key=lambda s: len(s) > _SHORT_VALUE + 8)  # stable: short facts, then the long ones


class Console:
    """Renders event dicts as lines for a person. Stateful only for `bulk` events, which are
    counted until the next other event (or `flush`)."""

    def __init__(self, *, colors: bool = False, width: int | None = None, times: bool = True) -> None:
        self.colors = colors
        self.width = width
        self.times = times
        self._bulk: dict[tuple[str, str], list[Any]] = {}  # (event, reason) -> [count, first timestamp]

    @staticmethod
    def is_bulk(event: Mapping[str, Any]) -> bool:
        return bool(event.get("bulk")) and str(event.get("level") or "info") in ("debug", "info")

    def render(self, event: Mapping[str, Any]) -> list[str]:
        """The event's own lines; a bulk event is counted instead (see `flush`)."""
        if self.is_bulk(event):
            seen = self._bulk.setdefault((str(event.get("event")), str(event.get("reason") or "")),
                                         [0, event.get("timestamp")])
            seen[0] += 1
            return []
        level = str(event.get("level") or "info")
        name = str(event.get("event", ""))
        if name == "plan" and isinstance(event.get("actions"), list):
            return [self._plan_line(event, a) for a in event["actions"] if isinstance(a, dict)]
        if name == "summary" and isinstance(event.get("table"), list):
            return self._table(event)
        lines = [self._line(event, level, self._text(event))]
        if event.get("exception"):
            lines += ["    " + line for line in str(event["exception"]).rstrip().splitlines()]
        return lines

    def flush(self) -> list[str]:
        lines = []
        for (name, reason), (n, stamp) in self._bulk.items():
            text = f"{name} ×{n}" + (f": {reason}" if reason else "") + " (each one is an event in the JSON log)"
            lines.append(self._line({"timestamp": stamp}, "info", text))
        self._bulk.clear()
        return lines

    @staticmethod
    def _text(event: Mapping[str, Any]) -> str:
        text = str(event.get("event", ""))
        target = event.get("target")
        if isinstance(event.get("action"), str) and isinstance(target, str) and target not in text:
            text = f"{text} {target}"  # an action event: "stop workspace/alice/ws1"
        return text

    def _prefix(self, event: Mapping[str, Any], level: str) -> tuple[str, int]:
        """The time and level columns, and their printed width (colour codes take none)."""
        label = _LEVELS.get(level, level[:5].ljust(5))
        stamp = str(event.get("timestamp") or "")
        when = stamp[11:19] + " " if self.times and len(stamp) >= 19 else ""
        plain = f"{when}{label} "
        if not self.colors:
            return plain, len(plain)
        color = _COLORS.get(level, "")
        return f"{_DIM}{when}{_RESET}{color}{label}{_RESET if color else ''} ", len(plain)

    def _line(self, event: Mapping[str, Any], level: str, text: str, fields: Mapping[str, Any] | None = None) -> str:
        cut = level in ("debug", "info")
        shown = _fields(event if fields is None else fields, text, cut)
        prefix, used = self._prefix(event, level)
        line = text + ("  " + " ".join(shown) if shown else "")
        if cut and self.width and used + len(line) > self.width:
            line = line[:self.width - used - 1] + "…"
        return prefix + line

    def _plan_line(self, event: Mapping[str, Any], action: Mapping[str, Any]) -> str:
        would = "would " if event.get("dry_run") and action.get("writes", True) else ""
        text = f"{would}{action.get('action')} {action.get('target')}"
        details = {k: v for k, v in action.items() if k not in ("action", "target", "writes")}
        return self._line(event, str(event.get("level") or "info"), text, details)

    def _table(self, event: Mapping[str, Any]) -> list[str]:
        names = [str(n) for n in event["table"]]
        heads = ["would change" if n == "changed" and event.get("dry_run") else n.replace("_", " ") for n in names]
        job = str(event.get("job") or "job") + (" (dry run)" if event.get("dry_run") else "")
        cells = [str(event.get(n, 0)) for n in names]
        widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
        first = max(len(job), len("summary"))
        head = "  ".join(["summary".ljust(first), *(h.rjust(w) for h, w in zip(heads, widths))])
        row = "  ".join([job.ljust(first), *(c.rjust(w) for c, w in zip(cells, widths))])
        prefix, used = self._prefix(event, "info")
        return [prefix + head, " " * used + row]


class _ConsoleProcessor:
    def __init__(self, console: Console, out: TextIO) -> None:
        self.console, self.out = console, out

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        event_dict.setdefault("level", method)
        if not self.console.is_bulk(event_dict):
            pending = self.console.flush()  # counted bulk events are info: stdout, before this event
            if pending:
                self.out.write("\n".join(pending) + "\n")
        lines = self.console.render(event_dict)
        if not lines:
            raise structlog.DropEvent
        return "\n".join(lines)


class _SplitLogger:
    """Info to `out`, warnings and errors to `err`; flushed per line so the two streams interleave
    in order on a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def _write(self, stream: TextIO, message: str) -> None:
        stream.write(message + "\n")
        stream.flush()

    def msg(self, message: str) -> None:
        self._write(self.out, message)

    def failure(self, message: str) -> None:
        self._write(self.err, message)

    debug = info = msg
    warning = warn = error = critical = exception = fatal = failure


_console: Console | None = None
_out: TextIO | None = None


def configure(fmt: str | None = None, stream: TextIO | None = None, job: str | None = None,
              err_stream: TextIO | None = None) -> None:
    """`stream` receives info (stdout by default), `err_stream` warnings and errors (stderr by
    default; `stream` when only `stream` is given, as tests do)."""
    global _console, _out
    out = stream or sys.stdout
    err = err_stream or (stream if stream is not None else sys.stderr)
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    renderer: Any
    if fmt == "console":
        width = shutil.get_terminal_size((160, 24)).columns if out.isatty() else 160
        _console = Console(colors=out.isatty(), width=max(width, 80))
        renderer = _ConsoleProcessor(_console, out)
    else:
        _console = None
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    _out = out
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        logger_factory=lambda *_args: _SplitLogger(out, err),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if job:
        structlog.contextvars.bind_contextvars(job=job)


def flush() -> None:
    """Write what the console still holds back (counted bulk events) before the process exits."""
    if _console is not None and _out is not None:
        lines = _console.flush()
        if lines:
            _out.write("\n".join(lines) + "\n")
            _out.flush()


def get_logger(**fields: Any) -> Any:
    return structlog.get_logger().bind(**fields)
