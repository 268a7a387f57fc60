"""Reaper policy: which workspaces are exempt and how long each may idle.

Sources, typed values of the reaper's settings (jobs/settings.py, ReapSettings), parsed once
with every other setting so a mistake exits 2 before anything is written:
- `REAP_IDLE_AFTER`: the default idle-after;
- `REAP_EXEMPT`: comma list of `owner/workspace` globs that are never stopped;
- `REAP_RULES_FILE`: YAML, a list under `rules:`; each rule has a unique `id` (lowercase,
  digits, dashes, as in kube-janitor's rules files: events and errors name the rule by it),
  optional globs `template`, `owner`, `workspace` (fnmatch, case-insensitive; an absent glob
  matches anything) and `idle_after` (alias `idleAfter`, as the chart's values spell it) and/or
  `exempt`. The first rule whose globs all match decides for that workspace. A rule is a
  pydantic model; every problem of every rule is reported at once, in the rules file's words.

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
from typing import Annotated, Any, NamedTuple

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError, model_validator
from pydantic_core import ErrorDetails

from jobs.durations import format_duration, parse_duration
from jobs.errors import ConfigError, yaml_problem

# coderd batches last_used_at writes (agent stats every 30 s, flushed every 60 s; BEHAVIOR.md §7):
# an idle-after below a few minutes would stop workspaces that are in use.
MIN_IDLE_AFTER = timedelta(minutes=5)

_MAX_GLOB_LEN = 256
_MAX_ID_LEN = 63
_ID = re.compile(rf"^[a-z][a-z0-9-]{{0,{_MAX_ID_LEN - 1}}}$")  # as kube-janitor's rule ids


def glob_match(pattern: str, value: str) -> bool:
    """fnmatch, case-insensitive on every platform (coderd names are case-insensitive)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def idle_after_problem(value: Any) -> str | None:
    """Why `value` is not an acceptable idle-after (a setting or a rule's), or None."""
    if isinstance(value, timedelta):
        value = f"{value.total_seconds()}s"
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


def _idle_after(value: Any) -> timedelta:
    problem = idle_after_problem(value)
    if problem:
        raise ValueError(problem)
    return value if isinstance(value, timedelta) else parse_duration(str(value))


# An idle-after as the settings and the rules hold it: `2h`, `90m`, `3600s` in, a timedelta inside, `2h` out.
IdleAfter = Annotated[timedelta, BeforeValidator(_idle_after), PlainSerializer(format_duration, return_type=str)]


def parse_idle_after(value: Any, where: str) -> timedelta:
    """A duration from a setting or a rule; ConfigError naming `where` when it is not one."""
    try:
        return _idle_after(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _glob_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a glob string, got {type(value).__name__}"
    if not value.strip():
        return "empty glob (omit the key to match anything)"
    if len(value.strip()) > _MAX_GLOB_LEN:
        return f"glob longer than {_MAX_GLOB_LEN} characters"
    return None


def _glob(value: Any) -> str:
    problem = _glob_problem(value)
    if problem:
        raise ValueError(problem)
    return str(value).strip()


Glob = Annotated[str, BeforeValidator(_glob)]


class ExemptGlob(NamedTuple):
    """One `owner/workspace` entry of REAP_EXEMPT."""

    owner: str
    workspace: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.workspace}"


def parse_exempt(text: str | Iterable[str] | None) -> tuple[ExemptGlob, ...]:
    """`REAP_EXEMPT`: comma list of `owner/workspace` globs -> ((owner_glob, workspace_glob), ...)."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for i, raw in enumerate(items):
        if isinstance(raw, ExemptGlob):
            raw = str(raw)
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
        globs = []
        for part, name in zip(parts, ("owner", "workspace")):
            problem = _glob_problem(part)
            if problem:
                raise ConfigError(f"REAP_EXEMPT entry {i} {name}: {problem}")
            globs.append(part.strip())
        out.append(ExemptGlob(*globs))
    return tuple(out)


def _exempt_setting(value: Any) -> tuple[ExemptGlob, ...]:
    try:
        return parse_exempt(value)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("REAP_EXEMPT ")) from None


# REAP_EXEMPT as the settings hold it: the comma list in, the globs inside, the comma list out.
ExemptGlobs = Annotated[tuple[ExemptGlob, ...], BeforeValidator(_exempt_setting),
                        PlainSerializer(lambda globs: ",".join(map(str, globs)) or None)]


def _rule_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"expected lowercase letters, digits and dashes, starting with a letter (at most {_MAX_ID_LEN})")
    return value


def _true_or_false(value: Any) -> bool:
    if not isinstance(value, bool):  # YAML's `yes` is a string in YAML 1.2 and a mistake either way
        raise ValueError(f"expected true or false, got {type(value).__name__}")
    return value


class Rule(BaseModel):
    """One rule of REAP_RULES_FILE. Absent globs match anything."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: Annotated[str, BeforeValidator(_rule_id)]
    template: Glob | None = None
    owner: Glob | None = None
    workspace: Glob | None = None
    # `idleAfter` is how the chart's values spell it.
    idle_after: IdleAfter | None = Field(None, validation_alias=AliasChoices("idle_after", "idleAfter"))
    exempt: Annotated[bool, BeforeValidator(_true_or_false)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "idle_after" in raw and "idleAfter" in raw:
            raise ValueError("both idle_after and idleAfter given; use one")
        return raw

    @model_validator(mode="after")
    def _decides_something(self) -> Rule:
        if self.idle_after is None and self.exempt is None:
            raise ValueError("needs idle_after and/or exempt (a rule with neither would only hide later rules)")
        if self.exempt is True and self.idle_after is not None:
            raise ValueError("exempt: true together with idle_after is contradictory; keep one")
        return self

    def matches(self, owner: str, workspace: str, template: str) -> bool:
        return all(
            glob is None or glob_match(glob, value)
            for glob, value in ((self.template, template), (self.owner, owner), (self.workspace, workspace))
        )

    @property
    def name(self) -> str:
        """How events name the rule that decided."""
        return f"rule:{self.id}"


_ALLOWED_KEYS = ", ".join(sorted({"id", "template", "owner", "workspace", "idle_after", "idleAfter", "exempt"}))


def _problems(errors: list[ErrorDetails]) -> list[str]:
    """pydantic's errors for one rule, in the words of the rules file: each names its field."""
    out, unknown = [], []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            unknown.append(where)
        elif err["type"] == "missing" and where == "id":
            out.append("id: required (a name for the rule, used in the reaper's events), e.g. id: keep-gitops")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {msg}" if where else msg)
    if unknown:
        out.insert(0, f"unknown field(s) {', '.join(sorted(unknown))} (allowed: {_ALLOWED_KEYS})")
    return out


def _rule_label(index: int, raw: Any) -> str:
    rid = raw.get("id") if isinstance(raw, dict) else None
    return f'rule "{rid}" (rules[{index}])' if isinstance(rid, str) and _ID.match(rid) else f"rules[{index}]"


def _rule(index: int, raw: Any, seen: dict[str, int]) -> tuple[Rule | None, list[str]]:
    """One rule, or every problem it has (each a short phrase, without the rule's name)."""
    if not isinstance(raw, dict):
        return None, [f"expected a mapping with id and template/owner/workspace/idle_after/exempt, got {type(raw).__name__}"]
    problems = []
    rid = raw.get("id")
    if isinstance(rid, str) and _ID.match(rid):
        if rid in seen:
            problems.append(f"id: {rid!r} is also the id of rules[{seen[rid]}] (ids must be unique)")
        else:
            seen[rid] = index
    try:
        rule = Rule.model_validate(raw)
    except ValidationError as exc:
        return None, _problems(exc.errors(include_url=False)) + problems
    return (None if problems else rule), problems


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
        rule, found = _rule(i, raw, seen)
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
    import yaml  # here, not at import: every job imports the settings, few have a rules file

    try:
        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - see jobs.errors.yaml_problem
        raise ConfigError(f"REAP_RULES_FILE: {path} is not valid YAML {yaml_problem(exc, text)}") from None
    return parse_rules(data, where=f"REAP_RULES_FILE {path}")


@dataclass(frozen=True)
class RulesFile:
    """REAP_RULES_FILE, read once: where it is (for the log) and its rules."""

    path: Path
    rules: tuple[Rule, ...]


def _rules_file_setting(value: Any) -> RulesFile:
    if isinstance(value, RulesFile):
        return value
    try:
        return RulesFile(Path(value), load_rules(value))
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("REAP_RULES_FILE").lstrip(": ")) from None


# REAP_RULES_FILE as the settings hold it: a path in, the loaded rules inside, the path out.
RulesFileSetting = Annotated[RulesFile, BeforeValidator(_rules_file_setting),
                             PlainSerializer(lambda rules_file: str(rules_file.path), return_type=str)]


@dataclass(frozen=True)
class Decision:
    """What the policy says for one workspace."""

    exempt: bool
    idle_after: timedelta
    source: str  # "default", "REAP_EXEMPT", "rule:keep-gitops"


@dataclass(frozen=True)
class Policy:
    idle_after: timedelta
    exempt: tuple[ExemptGlob, ...] = ()
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
