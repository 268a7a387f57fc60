"""The templates as the chart ships them: one folder each, plus `coder-template.yaml`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jobs.archive import SETTINGS_FILE, archive_folder
from jobs.errors import ConfigError, yaml_problem
from jobs.terraform_files import HCLError, Variable, inspect
from jobs.validation import username_problem


class TemplateSettings(BaseModel):
    """The CE-effective template settings we manage (BEHAVIOR.md §6); others are left alone."""

    model_config = ConfigDict(extra="forbid")

    display_name: str = Field(default="", max_length=64)
    description: str = Field(default="", max_length=127)
    icon: str = ""
    default_ttl_ms: int = Field(default=0, ge=0)
    activity_bump_ms: int = Field(default=3_600_000, ge=0)
    allow_user_cancel_workspace_jobs: bool = False
    # Both templates were written for, and verified on, coderd v2.21, whose only flow is the
    # classic one; newer coderd creates templates on dynamic parameters unless told otherwise
    # (README "Supported Coder versions"). `false` opts a template into dynamic parameters.
    use_classic_parameter_flow: bool = True
    variables: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)

    @field_validator("display_name")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not have leading or trailing whitespace")
        return value

    def meta(self, parameter_flow: bool = True) -> dict[str, Any]:
        """The settings as PATCH /templates/{id} names them; without the parameter flow for a coderd
        that does not know it (jobs/coder_versions.py)."""
        exclude = {"variables"} if parameter_flow else {"variables", "use_classic_parameter_flow"}
        return self.model_dump(exclude=exclude)

    def create_meta(self, parameter_flow: bool = True) -> dict[str, Any]:
        """The same for POST .../templates, whose request names the flow
        `template_use_classic_parameter_flow` (coder/coder PR #18636, CreateTemplateRequest)."""
        meta = self.meta(parameter_flow)
        if "use_classic_parameter_flow" in meta:
            meta["template_use_classic_parameter_flow"] = meta.pop("use_classic_parameter_flow")
        return meta

    def variable_values(self) -> list[dict[str, str]]:
        """As the CLI sends them: strings; lists as JSON, booleans as true/false."""
        def text(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, list):
                return json.dumps(v)
            return str(v)

        return [{"name": k, "value": text(v)} for k, v in sorted(self.variables.items())]

    def variables_fingerprint(self) -> str:
        """Of the file's values alone; what is published is LocalTemplate.variables_fingerprint."""
        return _values_fingerprint(self.variable_values())


def _values_fingerprint(values: list[dict[str, str]]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LocalTemplate:
    name: str
    path: Path
    archive: bytes = field(repr=False)
    fingerprint: str
    settings: TemplateSettings
    files: tuple[str, ...] = ()
    variables: tuple[Variable, ...] = ()  # what the root module declares
    external_auth: tuple[str, ...] = ()  # `coder_external_auth` provider ids, modules included

    def variable_values(self) -> list[dict[str, str]]:
        """Every declared variable with its value from coder-template.yaml, else its default.

        All of them, on every version: coderd carries a value a version omits over from the
        active version (BEHAVIOR.md §11), so deleting a line must send the default to reset it.
        """
        given = {v["name"]: v["value"] for v in self.settings.variable_values()}
        return [{"name": v.name, "value": given[v.name] if v.name in given else v.default or ""}
                for v in sorted(self.variables, key=lambda v: v.name)]

    def variables_fingerprint(self) -> str:
        """Covers the full effective set, so a changed default publishes a version too."""
        return _values_fingerprint(self.variable_values())


def _variable_problems(settings: TemplateSettings, declared: tuple[Variable, ...]) -> list[str]:
    names = {v.name for v in declared}
    problems = [f"variables.{name}: the template declares no such variable" for name in sorted(settings.variables)
                if name not in names]
    problems += [f"variables.{v.name}: required (the template gives it no default)" for v in declared
                 if v.default is None and v.name not in settings.variables]
    return problems


def read_settings(folder: Path) -> tuple[TemplateSettings | None, list[str]]:
    """The folder's coder-template.yaml (absent: the defaults), or None and every problem in it."""
    path = folder / SETTINGS_FILE
    if not path.exists():
        return TemplateSettings(), []
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{SETTINGS_FILE}: cannot read it: {type(exc).__name__}"]
    try:
        raw = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - see jobs.errors.yaml_problem
        return None, [f"{SETTINGS_FILE} is not valid YAML {yaml_problem(exc, text)}"]
    if not isinstance(raw, dict):
        return None, [f"{SETTINGS_FILE} must be a mapping"]
    try:
        return TemplateSettings.model_validate(raw), []
    except ValidationError as exc:
        return None, [f"{SETTINGS_FILE} {'.'.join(map(str, e['loc']))}: {e['msg']}"
                      for e in exc.errors(include_input=False, include_url=False)]


def load_settings(folder: Path, name: str) -> TemplateSettings:
    settings, problems = read_settings(folder)
    if settings is None:
        raise ConfigError(f"template {name}: invalid {SETTINGS_FILE}", problems)
    return settings


def load_template(root: Path, name: str) -> tuple[LocalTemplate | None, list[str]]:
    """One template folder, or None and every problem found in it: its name, its archive, its
    settings file and each of its Terraform files are all read, so one run lists them all."""
    problem = username_problem(name)
    if problem:
        return None, [f"a template name {problem} (the folder's name is the template's name)"]
    folder = root / name
    data, fp, files, problems = archive_folder(folder)
    settings, settings_problems = read_settings(folder)
    problems += settings_problems
    try:
        facts = inspect(files)
    except HCLError as exc:
        problems += [f"cannot read its Terraform: {p}" for p in exc.problems]
        facts = None
    if settings is not None and facts is not None:
        problems += [f"{SETTINGS_FILE} does not match the template's variables: {p}"
                     for p in _variable_problems(settings, facts.variables)]
    if problems or settings is None or facts is None:
        return None, problems
    return LocalTemplate(name, folder, data, fp, settings, tuple(sorted(files)), facts.variables,
                         facts.external_auth), []


def load_templates(root: Path, names: list[str] | None) -> list[LocalTemplate]:
    """Every template asked for, or one ConfigError naming every problem of every template
    (before anything is written: the jobs call this first)."""
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = names if names is not None else available
    missing = [n for n in wanted if n not in available]
    if missing:
        raise ConfigError(f"TEMPLATES names templates that are not folders in TEMPLATES_DIR ({root}): {', '.join(missing)}")
    if not wanted:
        raise ConfigError(f"TEMPLATES_DIR ({root}) has no template folders")
    out, problems, invalid = [], [], 0
    for name in wanted:
        local, found = load_template(root, name)
        problems += [f"template {name}: {p}" for p in found]
        invalid += bool(found)
        if local is not None:
            out.append(local)
    if problems:
        raise ConfigError(f"{invalid} of {len(wanted)} templates in TEMPLATES_DIR ({root}) cannot be published "
                          "(nothing was written)", problems)
    return out
