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
from jobs.errors import ConfigError
from jobs.validation import username_problem


class TemplateSettings(BaseModel):
    """The CE-effective template settings we manage (BEHAVIOR.md §6); others are left alone."""

    model_config = ConfigDict(extra="forbid")

    display_name: str = Field("", max_length=64)
    description: str = Field("", max_length=127)
    icon: str = ""
    default_ttl_ms: int = Field(0, ge=0)
    activity_bump_ms: int = Field(3_600_000, ge=0)
    allow_user_cancel_workspace_jobs: bool = False
    variables: dict[str, str | int | float | bool | list[str]] = Field(default_factory=dict)

    @field_validator("display_name")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        if value != value.strip():
            raise ValueError("must not have leading or trailing whitespace")
        return value

    def meta(self) -> dict[str, Any]:
        return self.model_dump(exclude={"variables"})

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
        return "sha256:" + hashlib.sha256(json.dumps(self.variable_values(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LocalTemplate:
    name: str
    path: Path
    archive: bytes = field(repr=False)
    fingerprint: str
    settings: TemplateSettings
    files: tuple[str, ...] = ()


def load_settings(folder: Path, name: str) -> TemplateSettings:
    path = folder / SETTINGS_FILE
    if not path.exists():
        return TemplateSettings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except Exception as exc:  # noqa: BLE001 - besides YAMLError, PyYAML raises ValueError (2001-13-01), KeyError (!!bool maybe), RecursionError
        raise ConfigError(f"template {name}: {SETTINGS_FILE} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"template {name}: {SETTINGS_FILE} must be a mapping")
    try:
        return TemplateSettings.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False, include_url=False)]
        raise ConfigError(f"template {name}: invalid {SETTINGS_FILE}", problems) from None


def load_templates(root: Path, names: list[str] | None) -> list[LocalTemplate]:
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = names if names is not None else available
    missing = [n for n in wanted if n not in available]
    if missing:
        raise ConfigError(f"TEMPLATES names templates that are not folders in TEMPLATES_DIR ({root}): {', '.join(missing)}")
    if not wanted:
        raise ConfigError(f"TEMPLATES_DIR ({root}) has no template folders")
    out = []
    for name in wanted:
        problem = username_problem(name)
        if problem:
            raise ConfigError(f"template folder {name!r}: a template name {problem}")
        folder = root / name
        data, fp, files = archive_folder(folder, name)
        out.append(LocalTemplate(name, folder, data, fp, load_settings(folder, name), tuple(sorted(files))))
    return out
