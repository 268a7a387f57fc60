"""Workspaces and builds for the coderd fake, including bulk seeding for benchmarks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fakes.base import Request, Response
from fakes.coderd_common import (
    docker_name,
    is_uuid,
    msg,
    new_id,
    norm_uuid,
    not_found,
    opt_rfc3339,
    read_json,
    rfc3339,
    to_epoch,
    validation_failed,
)
from fakes.coderd_search import parse_workspace_query
from fakes.coderd_templates import pagination

if TYPE_CHECKING:  # pragma: no cover
    from fakes.coderd import Ctx, FakeCoderd

_SUCCEEDED = {"start": "running", "stop": "stopped", "delete": "deleted"}
_RUNNING = {"start": "starting", "stop": "stopping", "delete": "deleting"}
NEG_INF = float("-inf")


def workspace_status(job_status: str, transition: str) -> str:
    """codersdk.ConvertWorkspaceStatus."""
    if job_status == "succeeded":
        return _SUCCEEDED[transition]
    if job_status == "running":
        return _RUNNING[transition]
    return job_status  # pending, canceling, canceled, failed


class Workspace:
    __slots__ = ("id", "name", "owner_id", "owner_name", "org_id", "template_id", "created_at", "updated_at",
                 "last_used_at", "ttl_ms", "autostart_schedule", "dormant_at", "deleted", "automatic_updates",
                 "latest_build", "builds")

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class Build:
    __slots__ = ("id", "workspace_id", "build_number", "transition", "template_version_id", "initiator_id",
                 "initiator_name", "reason", "created_at", "updated_at", "deadline", "max_deadline", "job")

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class WorkspacesMixin:
    # -- state helpers -------------------------------------------------------------
    def _ws_status(self: FakeCoderd, ws: Workspace) -> str:
        b = ws.latest_build
        return workspace_status(self.job_status(b.job), b.transition)

    def _ws_index(self: FakeCoderd) -> tuple[list[Workspace], dict[str, list[Workspace]]]:
        """Live workspaces in coderd's order (running first, owner, name), cached until anything changes."""
        cache = self._ws_cache
        if cache is not None and cache[0] == self.ws_generation:
            return cache[1], cache[2]
        decorated = []
        for ws in self.workspaces.values():
            if ws.deleted:
                continue
            st = self._ws_status(ws)
            decorated.append((0 if st == "running" else 1, ws.owner_name.lower(), ws.name.lower(), ws.id, st, ws))
        decorated.sort(key=lambda d: d[:4])
        ordered = [d[5] for d in decorated]
        by_status: dict[str, list[Workspace]] = {}
        for d in decorated:
            by_status.setdefault(d[4], []).append(d[5])
        self._ws_cache = (self.ws_generation, ordered, by_status)
        return ordered, by_status

    def _ws_readable(self: FakeCoderd, ws: Workspace, ctx: Ctx) -> bool:
        return ctx.is_template_admin or ws.owner_id == ctx.user["id"]

    def _build_json(self: FakeCoderd, ws: Workspace, b: Build, matched: bool = False) -> dict:
        job_status = self.job_status(b.job)
        version = self.versions.get(b.template_version_id)
        out = {
            "id": b.id, "created_at": rfc3339(b.created_at), "updated_at": rfc3339(b.updated_at),
            "workspace_id": ws.id, "workspace_name": ws.name, "workspace_owner_id": ws.owner_id,
            "workspace_owner_name": ws.owner_name, "workspace_owner_avatar_url": "",
            "template_version_id": b.template_version_id, "template_version_name": version["name"] if version else "",
            "build_number": b.build_number, "transition": b.transition, "initiator_id": b.initiator_id,
            "initiator_name": b.initiator_name, "job": self._job_json(b.job), "reason": b.reason, "resources": [],
            "deadline": opt_rfc3339(b.deadline), "max_deadline": opt_rfc3339(b.max_deadline),
            "status": workspace_status(job_status, b.transition), "daily_cost": 0,
            "template_version_preset_id": None,
        }
        if matched:
            out["matched_provisioners"] = self._matched_provisioners()
        return out

    def _ws_json(self: FakeCoderd, ws: Workspace) -> dict:
        t = self.templates.get(ws.template_id) or {}
        org = self.orgs.get(ws.org_id) or {}
        out = {
            "id": ws.id, "created_at": rfc3339(ws.created_at), "updated_at": rfc3339(ws.updated_at),
            "owner_id": ws.owner_id, "owner_name": ws.owner_name, "owner_avatar_url": "",
            "organization_id": ws.org_id, "organization_name": org.get("name", ""),
            "template_id": ws.template_id, "template_name": t.get("name", ""),
            "template_display_name": t.get("display_name", ""), "template_icon": t.get("icon", ""),
            "template_allow_user_cancel_workspace_jobs": t.get("allow_user_cancel_workspace_jobs", False),
            "template_active_version_id": t.get("active_version_id"),
            "template_require_active_version": t.get("require_active_version", False),
            "latest_build": self._build_json(ws, ws.latest_build),
            "latest_app_status": None,
            "outdated": ws.latest_build.template_version_id != t.get("active_version_id"),
            "name": ws.name,
            "last_used_at": rfc3339(ws.last_used_at if ws.last_used_at is not None else None),
            "deleting_at": None,
            "dormant_at": opt_rfc3339(ws.dormant_at),
            "health": {"healthy": True, "failing_agents": []},
            "automatic_updates": ws.automatic_updates or "never",
            "allow_renames": False, "favorite": False, "next_start_at": None,
        }
        if ws.autostart_schedule:
            out["autostart_schedule"] = ws.autostart_schedule
        if ws.ttl_ms:
            out["ttl_ms"] = ws.ttl_ms
        return out

    # -- seeding -------------------------------------------------------------------
    def seed_template(self: FakeCoderd, name: str, *, org: str | None = None, created_by: str | None = None,
                      **fields: Any) -> dict:
        """A template whose only (active) version has a succeeded import job. Returns codersdk.Template JSON."""
        with self.lock:
            org_id = org or self.default_org_id
            existing = self._template_by_name(org_id, name)
            if existing is not None:
                return self._template_json(existing)
            creator = created_by
            if creator is None:
                owner = next((u for u in self.users.values() if "owner" in u["roles"] and not u["is_system"]), None)
                creator = owner["id"] if owner else next(iter(self.users))
            now = self.now()
            vid, tid = new_id(), new_id()
            job = self._new_job(job_type="template_version_import", org_id=org_id, file_id=new_id(),
                                tags={"scope": "organization", "owner": ""}, initiator_id=creator,
                                inputs={"template_version_id": vid}, drive=False)
            job.update(started_at=now, completed_at=now, worker_id=self.worker_id)
            self.versions[vid] = {
                "id": vid, "template_id": tid, "organization_id": org_id, "created_at": now, "updated_at": now,
                "name": docker_name(self.rng), "message": "seeded", "job_id": job["id"], "readme": "",
                "created_by": creator, "archived": False, "file_id": job["file_id"], "variables": [],
                "user_variable_values": {},
            }
            t = {
                "id": tid, "organization_id": org_id, "name": name, "display_name": "", "description": "", "icon": "",
                "created_at": now, "updated_at": now, "created_by": creator, "active_version_id": vid,
                "default_ttl_ms": 0, "activity_bump_ms": 3600000, "autostop_days": [], "autostop_weeks": 1,
                "autostart_days": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
                "allow_user_autostart": True, "allow_user_autostop": True, "allow_user_cancel_workspace_jobs": False,
                "failure_ttl_ms": 0, "time_til_dormant_ms": 0, "time_til_dormant_autodelete_ms": 0,
                "require_active_version": False, "deprecation_message": "", "max_port_share_level": "public",
                "group_acl": {org_id: ["read", "use"]}, "user_acl": {}, "deleted": False,
            }
            t.update({k: v for k, v in fields.items() if k in t})
            self.templates[tid] = t
            return self._template_json(t)

    def seed_workspaces(self: FakeCoderd, specs: Iterable[dict]) -> list[str]:
        """Insert workspaces with a latest build in a given state; returns their ids.

        Spec keys: owner, name, template, transition (start), job_status (succeeded),
        last_used_at (datetime; None = zero time; absent = now), completed_at (datetime; default now),
        created_at, ttl_ms, autostart_schedule, dormant_at, deadline, initiator, job_error.
        Seeded jobs are frozen: a seeded pending/running build stays that way.
        """
        ids: list[str] = []
        with self.lock:
            now = self.now()
            users: dict[str, dict] = {}
            templates: dict[str, dict] = {}
            for spec in specs:
                owner_name = spec.get("owner", "admin")
                owner = users.get(owner_name)
                if owner is None:
                    owner = users[owner_name] = self._ensure_user(owner_name)
                tname = spec.get("template", "ameide-dev")
                t = templates.get(tname)
                if t is None:
                    tj = self.seed_template(tname)
                    t = templates[tname] = self.templates[tj["id"]]
                transition = spec.get("transition", "start")
                status = spec.get("job_status", "succeeded")
                completed = to_epoch(spec["completed_at"]) if spec.get("completed_at") is not None else now
                created = to_epoch(spec["created_at"]) if spec.get("created_at") is not None else completed - 60
                ws_id, build_id = new_id(), new_id()
                job = {
                    "id": new_id(), "type": "workspace_build", "created_at": completed - 60, "updated_at": completed,
                    "started_at": None, "completed_at": None, "canceled_at": None, "error": "", "error_code": "",
                    "file_id": self.versions[t["active_version_id"]]["file_id"],
                    "tags": {"scope": "organization", "owner": ""}, "organization_id": t["organization_id"],
                    "initiator_id": owner["id"], "worker_id": None, "input": {"workspace_build_id": build_id},
                    "logs": [], "workspace_id": ws_id, "_phase_at": 0.0,
                }
                if status in ("running", "succeeded", "failed", "canceled", "canceling"):
                    job["started_at"] = completed - 50
                    job["worker_id"] = self.worker_id
                if status in ("succeeded", "failed", "canceled"):
                    job["completed_at"] = completed
                if status in ("canceled", "canceling"):
                    job["canceled_at"] = completed
                if status == "failed":
                    job["error"] = spec.get("job_error", "terraform apply: exit status 1")
                self.jobs[job["id"]] = job
                initiator = spec.get("initiator", owner_name)
                deadline = to_epoch(spec["deadline"]) if spec.get("deadline") is not None else None
                if deadline is None and spec.get("ttl_ms") and transition == "start" and status == "succeeded":
                    deadline = completed + spec["ttl_ms"] / 1000
                build = Build(id=build_id, workspace_id=ws_id, build_number=spec.get("build_number", 1),
                              transition=transition, template_version_id=t["active_version_id"],
                              initiator_id=owner["id"], initiator_name=initiator, reason="initiator",
                              created_at=completed - 60, updated_at=completed, deadline=deadline, max_deadline=None,
                              job=job)
                if "last_used_at" in spec:
                    last_used = to_epoch(spec["last_used_at"])  # None -> zero time
                else:
                    last_used = created
                ws = Workspace(id=ws_id, name=spec.get("name") or docker_name(self.rng), owner_id=owner["id"],
                               owner_name=owner["username"], org_id=t["organization_id"], template_id=t["id"],
                               created_at=created, updated_at=completed, last_used_at=last_used,
                               ttl_ms=spec.get("ttl_ms"), autostart_schedule=spec.get("autostart_schedule"),
                               dormant_at=to_epoch(spec.get("dormant_at")), deleted=bool(spec.get("deleted")),
                               automatic_updates="never", latest_build=build, builds=[build])
                self.workspaces[ws_id] = ws
                self.builds[build_id] = build
                ids.append(ws_id)
            self.ws_generation += 1
        return ids

    def workspace(self: FakeCoderd, ident: str) -> dict | None:
        """Workspace JSON by id or `owner/name` (deleted ones included)."""
        with self.lock:
            ws = self._find_ws(ident)
            return self._ws_json(ws) if ws else None

    def _find_ws(self: FakeCoderd, ident: str) -> Workspace | None:
        if is_uuid(ident):
            return self.workspaces.get(norm_uuid(ident))
        owner, _, name = ident.partition("/")
        for ws in self.workspaces.values():
            if ws.owner_name.lower() == owner.lower() and ws.name == name and not ws.deleted:
                return ws
        return None

    def set_last_used(self: FakeCoderd, ident: str, when: Any) -> None:
        with self.lock:
            ws = self._find_ws(ident)
            if ws is None:
                raise KeyError(ident)
            ws.last_used_at = to_epoch(when)
            self.ws_generation += 1

    # -- routes ----------------------------------------------------------------------
    def register_workspace_routes(self: FakeCoderd) -> None:
        self.api("GET", "/workspaces", self._list_workspaces)
        self.api("GET", "/workspaces/{workspace}", self._get_workspace)
        self.api("POST", "/workspaces/{workspace}/builds", self._post_build)
        self.api("GET", "/workspaces/{workspace}/builds", self._list_builds)
        self.api("PUT", "/workspaces/{workspace}/dormant", self._put_dormant)
        self.api("GET", "/workspacebuilds/{workspacebuild}", self._get_build)
        self.api("GET", "/workspacebuilds/{workspacebuild}/logs", self._get_build_logs)
        self.api("GET", "/users/{user}/workspace/{workspacename}", self._get_workspace_by_owner_name)

    def _list_workspaces(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        page = pagination(req)
        if isinstance(page, Response):
            return page
        limit, offset, _ = page
        filters, errors = parse_workspace_query(req.arg("q") or "")
        with self.lock:
            org_id = None
            if "organization" in filters and not errors:
                org = self._org_param(filters["organization"], ctx)
                if isinstance(org, Response):
                    errors.append({"field": "organization", "detail": f'Organization "{filters["organization"]}" '
                                                                      "either does not exist, or you are unauthorized to view it"})
                else:
                    org_id = org["id"]
            if errors:
                return msg(400, "Invalid workspace search query.", validations=errors)
            if filters.get("deleted"):
                pool = sorted((w for w in self.workspaces.values() if w.deleted),
                              key=lambda w: (w.owner_name.lower(), w.name.lower()))
            else:
                ordered, by_status = self._ws_index()
                pool = by_status.get(filters["status"], []) if "status" in filters else ordered
            owner = filters.get("owner")
            if owner == "me":
                owner = ctx.user["username"].lower()
            template = filters.get("template")
            template_ids = None
            if template is not None:
                template_ids = {t["id"] for t in self.templates.values() if t["name"].lower() == template}
            name = filters.get("name")
            ids = filters.get("id")
            before, after = filters.get("last_used_before"), filters.get("last_used_after")
            dormant = filters.get("dormant")
            outdated = filters.get("outdated")
            everything = ctx.is_template_admin
            me = ctx.user["id"]
            matched = []
            for ws in pool:
                if not everything and ws.owner_id != me:
                    continue
                if owner is not None and ws.owner_name.lower() != owner:
                    continue
                if template_ids is not None and ws.template_id not in template_ids:
                    continue
                if name is not None and name not in ws.name.lower():
                    continue
                if ids is not None and ws.id not in ids:
                    continue
                if org_id is not None and ws.org_id != org_id:
                    continue
                if before is not None or after is not None:
                    lu = ws.last_used_at if ws.last_used_at is not None else NEG_INF
                    if before is not None and lu > before:
                        continue
                    if after is not None and lu < after:
                        continue
                if dormant and ws.dormant_at is None:
                    continue
                if outdated is not None:
                    t = self.templates.get(ws.template_id)
                    is_outdated = t is not None and ws.latest_build.template_version_id != t["active_version_id"]
                    if is_outdated != outdated:
                        continue
                if "has-agent" in filters or "param" in filters:
                    continue  # the fake's workspaces have no agents and no parameters
                matched.append(ws)
            count = len(matched)
            window = matched[offset:offset + limit] if limit else matched[offset:]
            return Response(200, {"workspaces": [self._ws_json(ws) for ws in window], "count": count})

    def _ws_param(self: FakeCoderd, req: Request, ctx: Ctx) -> Workspace | Response:
        ident = req.params["workspace"]
        if not is_uuid(ident):
            return msg(400, f'Invalid UUID "{ident}".')
        ws = self.workspaces.get(norm_uuid(ident))
        if ws is None or not self._ws_readable(ws, ctx):
            return not_found()
        return ws

    def _gone(self: FakeCoderd, ws: Workspace) -> Response:
        return msg(410, f"Workspace {ws.id!r} was deleted, you can view this workspace by specifying '?deleted=true' "
                        "and trying again.".replace("'" + ws.id + "'", f'"{ws.id}"'))

    def _get_workspace(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            ws = self._ws_param(req, ctx)
            if isinstance(ws, Response):
                return ws
            if ws.deleted and (req.arg("include_deleted") or "").lower() != "true":
                return self._gone(ws)
            return Response(200, self._ws_json(ws))

    def _get_workspace_by_owner_name(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        u = self._user_param(req, ctx)
        if isinstance(u, Response):
            return u
        with self.lock:
            for ws in self.workspaces.values():
                if ws.owner_id == u["id"] and ws.name.lower() == req.params["workspacename"].lower() and not ws.deleted:
                    if self._ws_readable(ws, ctx):
                        return Response(200, self._ws_json(ws))
        return not_found()

    def _post_build(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        body = read_json(req, {"transition": "str", "template_version_id": "uuid", "dry_run": "bool", "state": "list",
                               "orphan": "bool", "rich_parameter_values": "list", "log_level": "str",
                               "template_version_preset_id": "uuid"})
        transition = body.get("transition", "")
        if transition not in ("start", "stop", "delete"):
            return validation_failed([("transition", "oneof" if transition else "required", transition)])
        with self.lock:
            ws = self._ws_param(req, ctx)
            if isinstance(ws, Response):
                return ws
            if ws.deleted:
                return self._gone(ws)
            if body.get("orphan") and transition != "delete":
                return msg(400, "Orphan is only permitted when deleting a workspace.")
            if body.get("log_level"):
                if body["log_level"] != "debug":
                    return validation_failed([("log_level", "oneof", body["log_level"])])
                return msg(400, "Terraform debug mode is disabled in the deployment configuration.")
            if not (ctx.is_owner or ws.owner_id == ctx.user["id"]):
                return msg(403, "You do not have permission to update this workspace.")
            if body.get("orphan") and not ctx.is_template_admin:
                return msg(403, "Only template managers may orphan resources.")
            if ws.dormant_at is not None and transition == "start":
                return msg(403, "Forbidden.", "Workspace is dormant: clear dormancy before starting it.")
            t = self.templates.get(ws.template_id)
            vid = body.get("template_version_id") or ws.latest_build.template_version_id
            v = self.versions.get(vid)
            if v is None or t is None or v["template_id"] != t["id"]:
                return msg(400, "Template version not found or does not belong to the workspace's template.")
            vstatus = self.job_status(self.jobs[v["job_id"]])
            if vstatus in ("pending", "running"):
                return msg(406, f"The provided template version is {vstatus}.", "Wait for the import to complete.")
            if vstatus != "succeeded":
                return msg(400, f"The provided template version {vstatus} to import. You cannot build workspaces with it!")
            if self.job_status(ws.latest_build.job) in ("pending", "running", "canceling"):
                return msg(409, "A workspace build is already active.")
            bid = new_id()
            job = self._new_job(job_type="workspace_build", org_id=ws.org_id, file_id=v["file_id"],
                                tags={"scope": "organization", "owner": ""}, initiator_id=ctx.user["id"],
                                inputs={"workspace_build_id": bid})
            job["workspace_id"] = ws.id
            now = self.now()
            b = Build(id=bid, workspace_id=ws.id, build_number=ws.latest_build.build_number + 1, transition=transition,
                      template_version_id=vid, initiator_id=ctx.user["id"], initiator_name=ctx.user["username"],
                      reason="initiator", created_at=now, updated_at=now, deadline=None, max_deadline=None, job=job)
            ws.latest_build = b
            ws.builds.append(b)
            ws.updated_at = now
            self.builds[bid] = b
            self.ws_generation += 1
            return Response(201, self._build_json(ws, b, matched=True))

    # -- build job phases (ticker, lock held) ------------------------------------------
    def _build_started(self: FakeCoderd, job: dict) -> None:
        self._add_log(job, "Setting up", stage="Setting up")
        self._add_log(job, "Planning infrastructure", stage="Planning infrastructure")

    def _build_finished(self: FakeCoderd, job: dict) -> None:
        b = self.builds.get(job["input"].get("workspace_build_id"))
        if not job["error"] and self.build_error:
            job["error"] = self.build_error
        if job["error"]:
            self._add_log(job, job["error"], stage="Starting workspace", level="error", source="provisioner")
            return
        self._add_log(job, "Apply complete! Resources: 0 added, 0 changed, 0 destroyed.",
                      stage="Starting workspace" if b is None or b.transition == "start" else "Stopping workspace",
                      source="provisioner")
        self._add_log(job, "Cleaning Up", stage="Cleaning Up")
        if b is None:
            return
        now = self.now()
        b.updated_at = now
        ws = self.workspaces.get(b.workspace_id)
        if ws is None:
            return
        if b.transition == "start" and ws.ttl_ms:
            b.deadline = now + ws.ttl_ms / 1000
        if b.transition == "delete":
            ws.deleted = True

    def _readable_build(self: FakeCoderd, req: Request, ctx: Ctx) -> tuple[Any, Any] | Response:
        bid = req.params["workspacebuild"]
        b = self.builds.get(norm_uuid(bid)) if is_uuid(bid) else None
        ws = self.workspaces.get(b.workspace_id) if b else None
        if b is None or ws is None or not self._ws_readable(ws, ctx):
            return not_found()
        return ws, b

    def _get_build(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            found = self._readable_build(req, ctx)
            if isinstance(found, Response):
                return found
            ws, b = found
            return Response(200, self._build_json(ws, b))

    def _get_build_logs(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            found = self._readable_build(req, ctx)
            if isinstance(found, Response):
                return found
            ws, b = found
            job = b.job
        return self._job_logs(req, job)

    def _list_builds(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            ws = self._ws_param(req, ctx)
            if isinstance(ws, Response):
                return ws
            return Response(200, [self._build_json(ws, b) for b in reversed(ws.builds)])

    def _put_dormant(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        body = read_json(req, {"dormant": "bool"})
        with self.lock:
            ws = self._ws_param(req, ctx)
            if isinstance(ws, Response):
                return ws
            if not (ctx.is_owner or ws.owner_id == ctx.user["id"]):
                return msg(403, "You do not have permission to update this workspace.")
            want = bool(body.get("dormant"))
            if want == (ws.dormant_at is not None):
                return Response(304)
            now = self.now()
            if want:
                ws.dormant_at = now
            else:
                ws.dormant_at = None
                ws.last_used_at = now
            ws.updated_at = now
            self.ws_generation += 1
            return Response(200, self._ws_json(ws))
