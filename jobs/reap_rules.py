"""Reaper policy: which workspaces are exempt and how long each may idle.

Sources, all parsed up front so a mistake exits 2 before anything is written:
- `REAP_IDLE_AFTER`: the default idle-after;
- `REAP_EXEMPT`: comma list of `owner/workspace` globs that are never stopped;
- `REAP_RULES_FILE`: YAML, a list under `rules:`; each rule has optional globs `template`,
  `owner`, `workspace` (fnmatch, case-insensitive; an absent glob matches anything) and
  `idle_after` (alias `idleAfter`, as the chart's values spell it) and/or `exempt`.
  The first rule whose globs all match decides for that workspace.

`REAP_EXEMPT` cannot be overridden by a rule: exemption only ever widens (a rule with
`exempt: false` does not un-exempt a workspace listed there). That keeps the safe direction
of a mistake: at worst a workspace is not stopped.

Pure functions; the only I/O is reading the rules file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import yaml

from jobs.durations import format_duration, parse_duration
from jobs.errors import ConfigError

# coderd batches last_used_at writes (agent stats every 30 s, flushed every 60 s; BEHAVIOR.md §7):
# an idle-after below a few minutes would stop workspaces that are in use.
MIN_IDLE_AFTER = timedelta(minutes=5)

_GLOB_KEYS = ("template", "owner", "workspace")
_KNOWN_KEYS = set(_GLOB_KEYS) | {"idle_after", "idleAfter", "exempt"}
_MAX_GLOB_LEN = 256


def glob_match(pattern: str, value: str) -> bool:
    """fnmatch, case-insensitive on every platform (coderd names are case-insensitive)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def parse_idle_after(value: Any, where: str) -> timedelta:
    """A duration from a setting or a rule; ConfigError naming `where` when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: expected a duration such as 2h, 90m or 3600s, got {type(value).__name__}")
    try:
        delta = parse_duration(str(value))
    except (ValueError, OverflowError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if delta < MIN_IDLE_AFTER:
        raise ConfigError(
            f"{where}: {format_duration(delta)} is shorter than {format_duration(MIN_IDLE_AFTER)}; coderd updates "
            "last_used_at only about once a minute, so workspaces in use would be stopped"
        )
    return delta


def _check_glob(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a glob string, got {type(value).__name__}")
    glob = value.strip()
    if not glob:
        raise ConfigError(f"{where}: empty glob (omit the key to match anything)")
    if len(glob) > _MAX_GLOB_LEN:
        raise ConfigError(f"{where}: glob longer than {_MAX_GLOB_LEN} characters")
    return glob


def parse_exempt(text: str | Iterable[str] | None) -> tuple[tuple[str, str], ...]:
    """`REAP_EXEMPT`: comma list of `owner/workspace` globs -> ((owner_glob, workspace_glob), ...)."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for i, raw in enumerate(items):
        if not isinstance(raw, str):
            raise ConfigError(f"REAP_EXEMPT entry {i}: expected a string")
        item = raw.strip()
        if not item:
            continue
        parts = item.split("/")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(
                f"REAP_EXEMPT entry {i} ({item!r}): expected owner/workspace globs, e.g. alice/* or */keep-*"
            )
        out.append((_check_glob(parts[0], f"REAP_EXEMPT entry {i} owner"),
                    _check_glob(parts[1], f"REAP_EXEMPT entry {i} workspace")))
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    index: int
    template: str | None = None
    owner: str | None = None
    workspace: str | None = None
    idle_after: timedelta | None = None
    exempt: bool | None = None

    def matches(self, owner: str, workspace: str, template: str) -> bool:
        return all(
            glob is None or glob_match(glob, value)
            for glob, value in ((self.template, template), (self.owner, owner), (self.workspace, workspace))
        )

    @property
    def name(self) -> str:
        return f"rule[{self.index}]"


def parse_rule(index: int, raw: Any) -> Rule:
    where = f"REAP_RULES_FILE rule {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with template/owner/workspace/idle_after/exempt, "
                          f"got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(_KNOWN_KEYS))})")
    if "idle_after" in raw and "idleAfter" in raw:
        raise ConfigError(f"{where}: both idle_after and idleAfter given; use one")
    globs = {k: _check_glob(raw[k], f"{where} field {k}") for k in _GLOB_KEYS if k in raw and raw[k] is not None}
    idle_key = "idle_after" if "idle_after" in raw else "idleAfter" if "idleAfter" in raw else None
    idle_after = parse_idle_after(raw[idle_key], f"{where} field {idle_key}") if idle_key else None
    exempt = raw.get("exempt")
    if "exempt" in raw and not isinstance(exempt, bool):
        raise ConfigError(f"{where} field exempt: expected true or false, got {type(exempt).__name__}")
    if idle_after is None and exempt is None:
        raise ConfigError(f"{where}: needs idle_after and/or exempt (a rule with neither would only hide later rules)")
    if exempt is True and idle_after is not None:
        raise ConfigError(f"{where}: exempt: true together with idle_after is contradictory; keep one")
    return Rule(index=index, idle_after=idle_after, exempt=exempt, **globs)


def parse_rules(data: Any) -> tuple[Rule, ...]:
    """The parsed YAML document -> rules. An empty document means no rules."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigError(f"REAP_RULES_FILE: expected a mapping with a `rules:` list, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k != "rules")
    if unknown:
        raise ConfigError(f"REAP_RULES_FILE: unknown top-level field(s) {', '.join(unknown)} (only `rules`)")
    rules = data.get("rules")
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise ConfigError(f"REAP_RULES_FILE field rules: expected a list, got {type(rules).__name__}")
    return tuple(parse_rule(i, r) for i, r in enumerate(rules))


def load_rules(path: Path | str | None) -> tuple[Rule, ...]:
    if path is None:
        return ()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"REAP_RULES_FILE: cannot read {path}: {type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors also raise ValueError (2001-13-01), KeyError (!!bool maybe), RecursionError
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        why = "" if isinstance(exc, yaml.YAMLError) else f" ({type(exc).__name__}: {str(exc)[:200]})"
        raise ConfigError(f"REAP_RULES_FILE: {path} is not valid YAML{at}{why}") from None
    return parse_rules(data)


@dataclass(frozen=True)
class Decision:
    """What the policy says for one workspace."""

    exempt: bool
    idle_after: timedelta
    source: str  # "default", "REAP_EXEMPT", "rule[3]"


@dataclass(frozen=True)
class Policy:
    idle_after: timedelta
    exempt: tuple[tuple[str, str], ...] = ()
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def decide(self, owner: str, workspace: str, template: str) -> Decision:
        listed = any(glob_match(o, owner) and glob_match(w, workspace) for o, w in self.exempt)
        for rule in self.rules:
            if rule.matches(owner, workspace, template):
                idle = rule.idle_after or self.idle_after
                if listed:
                    return Decision(True, idle, "REAP_EXEMPT")
                return Decision(bool(rule.exempt), idle, rule.name)
        return Decision(listed, self.idle_after, "REAP_EXEMPT" if listed else "default")


def policy_from_settings(idle_after: str, exempt: str | None, rules_file: Path | str | None) -> Policy:
    return Policy(
        idle_after=parse_idle_after(idle_after, "REAP_IDLE_AFTER"),
        exempt=parse_exempt(exempt),
        rules=load_rules(rules_file),
    )
