"""Reaper policy: which workspaces are exempt and how long each may idle.

Sources, all parsed up front so a mistake exits 2 before anything is written:
- `REAP_IDLE_AFTER`: the default idle-after;
- `REAP_EXEMPT`: comma list of `owner/workspace` globs that are never stopped;
- `REAP_RULES_FILE`: YAML, a list under `rules:`; each rule has a unique `id` (lowercase,
  digits, dashes, as in kube-janitor's rules files: events and errors name the rule by it),
  optional globs `template`, `owner`, `workspace` (fnmatch, case-insensitive; an absent glob
  matches anything) and `idle_after` (alias `idleAfter`, as the chart's values spell it) and/or
  `exempt`. The first rule whose globs all match decides for that workspace. Every problem of
  every rule is reported at once.

`REAP_EXEMPT` cannot be overridden by a rule: exemption only ever widens (a rule with
`exempt: false` does not un-exempt a workspace listed there). That keeps the safe direction
of a mistake: at worst a workspace is not stopped.

Pure functions; the only I/O is reading the rules file.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs.durations import format_duration, parse_duration
from jobs.errors import ConfigError, yaml_problem

# coderd batches last_used_at writes (agent stats every 30 s, flushed every 60 s; BEHAVIOR.md §7):
# an idle-after below a few minutes would stop workspaces that are in use.
MIN_IDLE_AFTER = timedelta(minutes=5)

_GLOB_KEYS = ("template", "owner", "workspace")
_KNOWN_KEYS = set(_GLOB_KEYS) | {"id", "idle_after", "idleAfter", "exempt"}
_MAX_GLOB_LEN = 256
_MAX_ID_LEN = 63
_ID = re.compile(rf"^[a-z][a-z0-9-]{{0,{_MAX_ID_LEN - 1}}}$")  # as kube-janitor's rule ids


def glob_match(pattern: str, value: str) -> bool:
    """fnmatch, case-insensitive on every platform (coderd names are case-insensitive)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def idle_after_problem(value: Any) -> str | None:
    """Why `value` is not an acceptable idle-after (a setting or a rule's), or None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"expected a duration such as 2h, 90m or 3600s, got {type(value).__name__}"
    try:
        delta = parse_duration(str(value))
    except (ValueError, OverflowError) as exc:
        return str(exc)
    if delta < MIN_IDLE_AFTER:
        return (f"{format_duration(delta)} is shorter than {format_duration(MIN_IDLE_AFTER)} (coderd updates "
                "last_used_at only about once a minute, so workspaces in use would be stopped)")
    return None


def parse_idle_after(value: Any, where: str) -> timedelta:
    """A duration from a setting or a rule; ConfigError naming `where` when it is not one."""
    problem = idle_after_problem(value)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return parse_duration(str(value))


def _glob_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a glob string, got {type(value).__name__}"
    if not value.strip():
        return "empty glob (omit the key to match anything)"
    if len(value.strip()) > _MAX_GLOB_LEN:
        return f"glob longer than {_MAX_GLOB_LEN} characters"
    return None


def _check_glob(value: Any, where: str) -> str:
    problem = _glob_problem(value)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return str(value).strip()


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
    id: str = ""
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
        """How events name the rule that decided: its id (rules files require one)."""
        return f"rule:{self.id}" if self.id else f"rules[{self.index}]"


def _rule_label(index: int, raw: Any) -> str:
    rid = raw.get("id") if isinstance(raw, dict) else None
    return f'rule "{rid}" (rules[{index}])' if isinstance(rid, str) and _ID.match(rid) else f"rules[{index}]"


def _rule_problems(index: int, raw: Any, seen: dict[str, int]) -> tuple[Rule | None, list[str]]:
    """One rule, or every problem it has (each a short phrase, without the rule's name)."""
    if not isinstance(raw, dict):
        return None, [f"expected a mapping with id and template/owner/workspace/idle_after/exempt, got {type(raw).__name__}"]
    problems = []
    rid = raw.get("id")
    if rid is None:
        problems.append("id: required (a name for the rule, used in the reaper's events), e.g. id: keep-gitops")
    elif not isinstance(rid, str) or not _ID.match(rid):
        problems.append(f"id: expected lowercase letters, digits and dashes, starting with a letter (at most {_MAX_ID_LEN})")
    elif rid in seen:
        problems.append(f"id: {rid!r} is also the id of rules[{seen[rid]}] (ids must be unique)")
    else:
        seen[rid] = index
    unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KNOWN_KEYS))})")
    globs = {}
    for key in _GLOB_KEYS:
        if raw.get(key) is not None:
            problem = _glob_problem(raw[key])
            if problem:
                problems.append(f"{key}: {problem}")
            else:
                globs[key] = str(raw[key]).strip()
    if "idle_after" in raw and "idleAfter" in raw:
        problems.append("both idle_after and idleAfter given; use one")
    idle_key = "idle_after" if "idle_after" in raw else "idleAfter" if "idleAfter" in raw else None
    idle_after = None
    if idle_key:
        problem = idle_after_problem(raw[idle_key])
        if problem:
            problems.append(f"{idle_key}: {problem}")
        else:
            idle_after = parse_duration(str(raw[idle_key]))
    exempt = raw.get("exempt")
    if "exempt" in raw and not isinstance(exempt, bool):
        problems.append(f"exempt: expected true or false, got {type(exempt).__name__}")
        exempt = None
    if idle_key is None and "exempt" not in raw:
        problems.append("needs idle_after and/or exempt (a rule with neither would only hide later rules)")
    if exempt is True and idle_after is not None:
        problems.append("exempt: true together with idle_after is contradictory; keep one")
    if problems:
        return None, problems
    return Rule(index=index, id=str(rid), idle_after=idle_after, exempt=exempt, **globs), []


def parse_rules(data: Any, where: str = "REAP_RULES_FILE") -> tuple[Rule, ...]:
    """The parsed YAML document -> rules. An empty document means no rules. Every problem of
    every rule is reported at once, one entry per rule, named by its id."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a `rules:` list, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k != "rules")
    if unknown:
        raise ConfigError(f"{where}: unknown top-level field(s) {', '.join(unknown)} (only `rules`)")
    rules = data.get("rules")
    if rules is None:
        return ()
    if not isinstance(rules, list):
        raise ConfigError(f"{where} field rules: expected a list, got {type(rules).__name__}")
    parsed: list[Rule] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(rules):
        rule, found = _rule_problems(i, raw, seen)
        if rule is not None:
            parsed.append(rule)
        if found:
            problems.append(f"{_rule_label(i, raw)}: {', '.join(found)}")
    if problems:
        raise ConfigError(f"{where}: {len(problems)} of {len(rules)} rule{'s' if len(rules) != 1 else ''} "
                          f"{'is' if len(problems) == 1 else 'are'} invalid", problems)
    return tuple(parsed)


def load_rules(path: Path | str | None) -> tuple[Rule, ...]:
    if path is None:
        return ()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise ConfigError(f"REAP_RULES_FILE: cannot read {path}: {type(exc).__name__}: {why}") from None
    import yaml  # here, not at import: settings.py checks the rules file and every job imports settings

    try:
        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - see jobs.errors.yaml_problem
        raise ConfigError(f"REAP_RULES_FILE: {path} is not valid YAML {yaml_problem(exc, text)}") from None
    return parse_rules(data, where=f"REAP_RULES_FILE {path}")


@dataclass(frozen=True)
class Decision:
    """What the policy says for one workspace."""

    exempt: bool
    idle_after: timedelta
    source: str  # "default", "REAP_EXEMPT", "rule:keep-gitops"


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
