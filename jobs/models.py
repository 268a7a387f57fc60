"""Typed views of what we read from coderd. Unknown fields are ignored, so a newer
coderd that adds fields does not break us; fields we rely on are declared."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


class CoderModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BuildInfo(CoderModel):
    version: str = ""
    external_url: str = ""
    deployment_id: str = ""


class User(CoderModel):
    id: str
    username: str
    email: str = ""
    name: str = ""
    status: str = ""
    login_type: str = ""
    roles: list[dict[str, Any]] = Field(default_factory=list)


class Organization(CoderModel):
    id: str
    name: str
    display_name: str = ""
    is_default: bool = False


class ProvisionerJob(CoderModel):
    id: str
    status: str
    error: str = ""
    error_code: str = ""
    file_id: str = ""
    created_at: datetime | None = None
    completed_at: datetime | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in {"succeeded", "failed", "canceled"}


class TemplateVersion(CoderModel):
    id: str
    name: str = ""
    message: str = ""
    template_id: str | None = None
    organization_id: str = ""
    archived: bool = False
    created_at: datetime | None = None
    job: ProvisionerJob


class TemplateVersionVariable(CoderModel):
    name: str
    value: str = ""  # `*redacted*` for a sensitive variable (BEHAVIOR.md §5)
    default_value: str = ""
    sensitive: bool = False
    required: bool = False


class ProvisionerJobLog(CoderModel):
    id: int
    stage: str = ""
    output: str = ""
    log_level: str = ""


class Template(CoderModel):
    id: str
    name: str
    organization_id: str = ""
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


class WorkspaceBuild(CoderModel):
    id: str
    transition: str
    status: str = ""
    build_number: int = 0
    job: ProvisionerJob
    initiator_name: str = ""


class Workspace(CoderModel):
    id: str
    name: str
    owner_name: str
    owner_id: str = ""
    template_name: str = ""
    template_id: str = ""
    last_used_at: datetime | None = None
    autostart_schedule: str | None = None
    dormant_at: datetime | None = None
    latest_build: WorkspaceBuild

    @property
    def last_used(self) -> datetime | None:
        """None when coderd does not know (absent or zero time)."""
        if self.last_used_at is None or self.last_used_at <= ZERO_TIME:
            return None
        return self.last_used_at
