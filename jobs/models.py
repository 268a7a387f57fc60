"""Typed views of what we read from coderd. Unknown fields are ignored, so a newer
coderd that adds fields does not break us; fields we rely on are declared."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


class CoderModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class BuildInfo(CoderModel):
    version: str = ""


class AuthMethods(CoderModel):
    setup_token_required: bool = False  # absent before the setup token existed (BEHAVIOR.md §12.1)


class CreatedFirstUser(CoderModel):
    user_id: str = ""
    organization_id: str = ""


class Organization(CoderModel):
    id: str
    name: str


class ProvisionerJob(CoderModel):
    id: str
    status: str
    error: str = ""
    file_id: str = ""
    completed_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in {"succeeded", "failed", "canceled"}


class TemplateVersion(CoderModel):
    id: str
    name: str = ""
    message: str = ""
    job: ProvisionerJob


class TemplateVersionVariable(CoderModel):
    name: str
    value: str = ""  # `*redacted*` for a sensitive variable (BEHAVIOR.md §5)
    sensitive: bool = False


class ProvisionerJobLog(CoderModel):
    id: int
    stage: str = ""
    output: str = ""
    log_level: str = ""


class Template(CoderModel):
    id: str
    name: str
    active_version_id: str
    display_name: str = ""
    description: str = ""
    icon: str = ""
    default_ttl_ms: int = 0
    activity_bump_ms: int = 0
    allow_user_cancel_workspace_jobs: bool = False
    allow_user_autostart: bool = True
    allow_user_autostop: bool = True
    failure_ttl_ms: int = 0
    time_til_dormant_ms: int = 0
    time_til_dormant_autodelete_ms: int = 0
    require_active_version: bool = False
    max_port_share_level: str | None = None
    deprecation_message: str = ""
    autostop_requirement: dict[str, Any] | None = None
    autostart_requirement: dict[str, Any] | None = None
    use_classic_parameter_flow: bool | None = None  # absent before v2.24 (jobs/coder_versions.py)


class WorkspaceBuild(CoderModel):
    id: str
    transition: str
    build_number: int = 0
    job: ProvisionerJob


class Workspace(CoderModel):
    id: str
    name: str
    latest_build: WorkspaceBuild
    owner_name: str
    owner_id: str = ""
    template_name: str = ""
    last_used_at: datetime | None = None
    autostart_schedule: str | None = None
    dormant_at: datetime | None = None

    @property
    def last_used(self) -> datetime | None:
        """None when coderd does not know (absent or zero time)."""
        if self.last_used_at is None or self.last_used_at <= ZERO_TIME:
            return None
        return self.last_used_at


class WorkspacesPage(CoderModel):
    workspaces: list[Workspace] | None = None  # an empty page may come as null
    count: int = 0
