"""Files, template versions (with their import jobs) and templates for the coderd fake."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import zipfile
from typing import TYPE_CHECKING, Any

from fakes.base import Request, Response
from fakes.coderd_archive import inspect_archive
from fakes.coderd_common import (
    NIL_UUID,
    display_name_valid,
    docker_name,
    is_uuid,
    msg,
    name_valid,
    new_id,
    norm_uuid,
    not_found,
    read_json,
    rfc3339,
    validation_failed,
    version_name_valid,
)

if TYPE_CHECKING:  # pragma: no cover
    from fakes.coderd import Ctx, FakeCoderd

TAR_TYPES = ("application/x-tar", "application/zip", "application/x-zip-compressed")
MAX_UPLOAD = 100 * 1024 * 1024
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DRY = "Detecting persistent resources"


def _zip_to_tar(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zf, tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for info in zf.infolist():
            ti = tarfile.TarInfo(info.filename)
            ti.mtime = int(time.mktime(info.date_time + (0, 0, -1)))
            if info.is_dir():
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                content = zf.read(info)
                ti.size = len(content)
                ti.mode = 0o644
                tf.addfile(ti, io.BytesIO(content))
    return out.getvalue()


def pagination(req: Request) -> tuple[int, int, str | None] | Response:
    errors = []
    values = {}
    for name in ("limit", "offset"):
        raw = req.arg(name)
        if raw in (None, ""):
            values[name] = 0
            continue
        try:
            v = int(raw)
            if v < 0 or v > 2**31 - 1:
                raise ValueError
            values[name] = v
        except ValueError:
            errors.append({"field": name, "detail": f'Query param "{name}" must be a valid positive 32-bit integer ({raw!r} given)'})
    after = req.arg("after_id")
    if after and not is_uuid(after):
        errors.append({"field": "after_id", "detail": 'Query param "after_id" must be a valid uuid'})
    if errors:
        return msg(400, "Query parameters have invalid values.", validations=errors)
    return values["limit"], values["offset"], norm_uuid(after) if after else None


class TemplatesMixin:
    # ======================================================================== files
    def _files_limited(self: FakeCoderd, req: Request, ctx: Ctx) -> Response | None:
        if not self.files_rate_limit:
            return None
        bypass = (req.header("x-coder-bypass-ratelimit") or "").lower() in ("true", "1", "t")
        if bypass:
            if ctx.is_owner:
                return None
            return Response(428, '"X-Coder-Bypass-Ratelimit" provided but user is not owner\n',
                            content_type="text/plain; charset=utf-8")
        now = time.monotonic()
        with self.lock:
            hits = [t for t in self._files_hits.get(ctx.user["id"], []) if now - t < 60]
            limit = self.files_rate_limit
            reset = int(self.now() + 60 - (now - hits[0]) if hits else self.now() + 60)
            headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Reset": str(reset)}
            if len(hits) >= limit:
                self._files_hits[ctx.user["id"]] = hits
                return Response(429, {"message": f"You've been rate limited for sending more than {limit} requests in 1m0s."},
                                headers={**headers, "X-RateLimit-Remaining": "0", "Retry-After": "60"})
            hits.append(now)
            self._files_hits[ctx.user["id"]] = hits
        return None

    def _post_file(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        limited = self._files_limited(req, ctx)
        if limited:
            return limited
        ctype = req.header("content-type") or ""
        if ctype not in TAR_TYPES:
            return msg(400, f'Unsupported content type header "{ctype}".')
        data = req.body
        if len(data) > MAX_UPLOAD:
            return msg(400, "Failed to read file from request.", "http: request body too large")
        if ctype != "application/x-tar":
            try:
                data = _zip_to_tar(data)
            except (zipfile.BadZipFile, ValueError) as exc:
                return msg(400, "Failed to convert zip to tar.", str(exc))
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            existing = self.files_by_hash.get((ctx.user["id"], digest))
            if existing:
                return Response(200, {"hash": existing})
            fid = new_id()
            self.files[fid] = {"id": fid, "hash": digest, "created_by": ctx.user["id"], "data": data,
                               "mimetype": "application/x-tar", "created_at": self.now()}
            self.files_by_hash[(ctx.user["id"], digest)] = fid
            if self.upload_race_pending:
                # As if an identical upload inserted these bytes between our lookup and our insert
                # (fakes/coderd_versions.py `upload_race`): the file is stored either way.
                self.upload_race_pending = False
                if self.behaviour.upload_race:
                    return msg(500, "Internal error saving file.", 'pq: duplicate key value violates unique '
                                                                  'constraint "files_hash_created_by_key"')
                return Response(200, {"hash": fid})
        return Response(201, {"hash": fid})

    def race_next_upload(self: FakeCoderd) -> None:
        """The next upload of new bytes meets an identical one uploaded at the same instant."""
        self.upload_race_pending = True

    def _readable_file(self: FakeCoderd, fid: str, ctx: Ctx) -> dict | None:
        f = self.files.get(fid)
        if f is None or not (ctx.is_template_admin or f["created_by"] == ctx.user["id"]):
            return None
        return f

    def _get_file(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        limited = self._files_limited(req, ctx)
        if limited:
            return limited
        fid = req.params["fileID"]
        if not is_uuid(fid):
            return msg(400, "File id must be a valid UUID.")
        with self.lock:
            f = self._readable_file(norm_uuid(fid), ctx)
            if f is None:
                return not_found()
            return Response(200, f["data"], content_type=f["mimetype"])

    # ============================================================ template versions
    def _job_json(self: FakeCoderd, job: dict) -> dict:
        status = self.job_status(job)
        out: dict[str, Any] = {
            "id": job["id"], "created_at": rfc3339(job["created_at"]), "status": status,
            "file_id": job["file_id"], "tags": dict(job["tags"]), "queue_position": 0, "queue_size": 0,
            "organization_id": job["organization_id"], "input": dict(job["input"]), "type": job["type"],
            "metadata": self._job_metadata(job),
        }
        for k in ("started_at", "completed_at", "canceled_at"):
            if job[k] is not None:
                out[k] = rfc3339(job[k])
        if job["error"]:
            out["error"] = job["error"]
        if job["error_code"]:
            out["error_code"] = job["error_code"]
        if job["worker_id"]:
            out["worker_id"] = job["worker_id"]
        if status == "pending" and job["id"] in self.active_jobs:
            pending = [j for j in self.active_jobs.values() if j["started_at"] is None and j["canceled_at"] is None]
            out["queue_size"] = len(pending)
            out["queue_position"] = 1 + sum(1 for j in pending if j["created_at"] < job["created_at"])
        return out

    def _job_metadata(self: FakeCoderd, job: dict) -> dict:
        meta: dict[str, Any] = {}
        vid = job["input"].get("template_version_id")
        v = self.versions.get(vid) if vid else None
        if v is not None:
            meta["template_version_name"] = v["name"]
            t = self.templates.get(v["template_id"]) if v["template_id"] else None
            if t is not None:
                meta.update(template_id=t["id"], template_name=t["name"], template_display_name=t["display_name"],
                            template_icon=t["icon"])
        ws_id = job.get("workspace_id")
        if ws_id:
            ws = self.workspaces.get(ws_id)
            if ws is not None:
                meta.update(workspace_id=ws.id, workspace_name=ws.name)
        return meta

    def _matched_provisioners(self: FakeCoderd) -> dict:
        count = max(0, self.provisioners)
        return {"count": count, "available": 0 if self.provisioner_paused else count,
                "most_recently_seen": rfc3339(self.now()) if count else None}

    def _version_json(self: FakeCoderd, v: dict, matched: bool = False) -> dict:
        creator = self.users.get(v["created_by"]) or {"id": v["created_by"], "username": ""}
        out = {
            "id": v["id"], "organization_id": v["organization_id"], "created_at": rfc3339(v["created_at"]),
            "updated_at": rfc3339(v["updated_at"]), "name": v["name"], "message": v["message"],
            "job": self._job_json(self.jobs[v["job_id"]]), "readme": v["readme"],
            "created_by": {"id": creator["id"], "username": creator["username"], "avatar_url": ""},
            "archived": v["archived"],
        }
        # Never absent: a version created without a template carries the nil UUID (BEHAVIOR.md §11).
        out["template_id"] = v["template_id"] or NIL_UUID
        if matched:
            out["matched_provisioners"] = self._matched_provisioners()
        return out

    def _readable_version(self: FakeCoderd, vid: str, ctx: Ctx) -> dict | None:
        if not is_uuid(vid):
            return None
        v = self.versions.get(norm_uuid(vid))
        if v is None:
            return None
        if ctx.is_template_admin or v["created_by"] == ctx.user["id"]:
            return v
        t = self.templates.get(v["template_id"]) if v["template_id"] else None
        return v if t is not None and self._template_readable(t, ctx) else None

    def _post_template_version(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        org = self._org_param(req.params["organization"], ctx)
        if isinstance(org, Response):
            return org
        body = read_json(req, {"name": "str", "message": "str", "template_id": "uuid", "storage_method": "str",
                               "file_id": "uuid", "example_id": "str", "provisioner": "str", "tags": "dict",
                               "user_variable_values": "list"})
        errors: list[tuple[str, str, Any]] = []
        name = body.get("name", "")
        if name and not version_name_valid(name):
            errors.append(("name", "template_version_name", name))
        if len(body.get("message", "")) >= 1048577:
            errors.append(("message", "lt", body["message"][:20]))
        sm = body.get("storage_method", "")
        if sm != "file":
            errors.append(("storage_method", "oneof", sm))
        if not body.get("file_id") and not body.get("example_id"):
            errors.append(("file_id", "required_without", "00000000-0000-0000-0000-000000000000"))
            errors.append(("example_id", "required_without", ""))
        prov = body.get("provisioner", "")
        if prov not in ("terraform", "echo"):
            errors.append(("provisioner", "oneof", prov))
        if errors:
            return validation_failed(errors)
        uvv: dict[str, str] = {}
        for item in body.get("user_variable_values", []):
            if not isinstance(item, dict) or not isinstance(item.get("name", ""), str) or not isinstance(item.get("value", ""), str):
                return msg(400, "Request body must be valid JSON.",
                           "json: cannot unmarshal into Go struct field .user_variable_values of type codersdk.VariableValue")
            uvv[item.get("name", "")] = item.get("value", "")
        tags = body.get("tags", {})
        if not all(isinstance(v, str) for v in tags.values()):
            return msg(400, "Request body must be valid JSON.", "json: cannot unmarshal into Go struct field .tags of type string")
        with self.lock:
            template = None
            if body.get("template_id"):
                template = self.templates.get(body["template_id"])
                if template is None or template["deleted"] or not self._template_readable(template, ctx):
                    return msg(404, "Template does not exist.")
            if body.get("file_id") and body.get("example_id"):
                return msg(400, "You cannot specify both an example_id and a file_id.")
            if body.get("example_id"):
                return msg(400, "Example not found.", f'example "{body["example_id"]}" not found')
            f = self._readable_file(body["file_id"], ctx)
            if f is None:
                return msg(404, "File not found.")
            data = f["data"]
        info = inspect_archive(data)  # outside the lock: may be slow for big archives
        if info.sync_error:
            return msg(500, "Internal error checking workspace tags", info.sync_error)
        if not ctx.is_template_admin:
            return msg(500, "Internal error creating template version.",
                       "insert template version: unauthorized: rbac: forbidden")
        all_tags = {"scope": "organization", "owner": ""}
        all_tags.update(tags)
        if all_tags.get("scope") == "user":
            all_tags["owner"] = ctx.user["id"]
        with self.lock:
            if template is not None and name:
                for v in self.versions.values():
                    if v["template_id"] == template["id"] and v["name"] == name:
                        return msg(409, f'A template version with name "{name}" already exists for this template.',
                                   validations=[{"field": "name", "detail": "This value is already in use and should be unique."}])
            if not name:
                name = docker_name(self.rng)
            vid = new_id()
            job = self._new_job(job_type="template_version_import", org_id=org["id"], file_id=f["id"],
                                tags=all_tags, initiator_id=ctx.user["id"], inputs={"template_version_id": vid})
            # Values a new version does not send are carried over from the template's active
            # version, not reset to the variable's default (BEHAVIOR.md §11).
            inherited: dict[str, str] = {}
            if template is not None:
                active = self.versions.get(template["active_version_id"])
                if active is not None:
                    inherited = {var["name"]: var["value"] for var in active["variables"]}
            job["_plan"] = {"info": info, "values": {**inherited, **uvv}}
            now = self.now()
            self.versions[vid] = {
                "id": vid, "template_id": template["id"] if template else None, "organization_id": org["id"],
                "created_at": now, "updated_at": now, "name": name, "message": body.get("message", ""),
                "job_id": job["id"], "readme": info.readme, "created_by": ctx.user["id"], "archived": False,
                "file_id": f["id"], "variables": [], "user_variable_values": uvv,
            }
            return Response(201, self._version_json(self.versions[vid], matched=True))

    # -- import job phases (called by the ticker, lock held) ----------------------
    def _import_started(self: FakeCoderd, job: dict) -> None:
        self._add_log(job, "Setting up", stage="Setting up")
        self._add_log(job, "Parsing template parameters", stage="Parsing template parameters")

    def _import_finished(self: FakeCoderd, job: dict) -> None:
        plan = job.get("_plan") or {}
        info = plan.get("info")
        version = self.versions.get(job["input"].get("template_version_id"))
        if job["error"] or info is None or version is None:
            self._add_log(job, "Cleaning Up", stage="Cleaning Up")
            return
        if info.job_error:
            job["error"] = info.job_error
            self._add_log(job, info.job_error, stage="Setting up", level="error")
            return
        values = plan["values"]
        recorded = []
        missing = []
        for var in info.variables:
            value = values.get(var.name)
            if value is None:
                value = var.default if var.default is not None else ""
            if var.required and value == "":
                missing.append(var.name)
            recorded.append({"name": var.name, "description": var.description, "type": var.type,
                             "value": value, "default_value": var.default or "", "required": var.required,
                             "sensitive": var.sensitive})
        version["variables"] = recorded
        if missing:
            job["error"] = f"update job: required template variables need values: {', '.join(missing)}"
            job["error_code"] = "REQUIRED_TEMPLATE_VARIABLES"
            self._add_log(job, job["error"], stage="Parsing template parameters", level="error")
            return
        self._add_log(job, DRY, stage=DRY)
        self._add_log(job, "Initializing the backend...", stage=DRY, source="provisioner")
        self._add_log(job, "Terraform has been successfully initialized!", stage=DRY, source="provisioner")
        if info.undeclared or info.fail_plan:
            ref = info.undeclared[0] if info.undeclared else "x"
            for line in ("Error: Reference to undeclared input variable",
                         f'  on main.tf: An input variable with the name "{ref}" has not been declared. '
                         f'This variable can be declared with a variable "{ref}" {{}} block.'):
                self._add_log(job, line, stage=DRY, level="error", source="provisioner")
            job["error"] = "template import provision for start: terraform plan: Reference to undeclared input variable"
            return
        self._add_log(job, "Plan: 0 to add, 0 to change, 0 to destroy.", stage=DRY, source="provisioner")
        self._add_log(job, "Detecting ephemeral resources", stage="Detecting ephemeral resources")
        self._add_log(job, "Cleaning Up", stage="Cleaning Up")
        # The plan succeeded; coderd then fails the job on completion when it names an external
        # auth provider the deployment lacks: an error on the job, no log line (BEHAVIOR.md §11,
        # coderd/provisionerdserver CompleteJob).
        for provider in info.external_auth:
            if provider not in self.external_auth_providers:
                job["error"] = f'external auth provider "{provider}" is not configured'
                return

    def _get_template_version(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            v = self._readable_version(req.params["templateversion"], ctx)
            if v is None:
                return not_found()
            return Response(200, self._version_json(v))

    def _get_template_version_logs(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            v = self._readable_version(req.params["templateversion"], ctx)
            if v is None:
                return not_found()
            job = self.jobs[v["job_id"]]
        return self._job_logs(req, job)

    def _job_logs(self: FakeCoderd, req: Request, job: dict) -> Response:
        if "follow" in req.query:
            return msg(400, "Failed to accept websocket.",
                       'WebSocket protocol violation: Connection header "" does not contain Upgrade')
        after = req.arg("after")
        after_id = 0
        if after not in (None, ""):
            try:
                after_id = int(after)
            except ValueError:
                return msg(400, 'Query param "after" must be an integer.', validations=[
                    {"field": "after", "detail": "Must be an integer"}])
        with self.lock:
            logs = [dict(lg, created_at=rfc3339(lg["created_at"])) for lg in job["logs"] if lg["id"] > after_id]
        return Response(200, logs)

    def _cancel_template_version(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            v = self._readable_version(req.params["templateversion"], ctx)
            if v is None:
                return not_found()
            if not ctx.is_template_admin:
                return msg(403, "Forbidden.", "You don't have permission to update this template.")
            job = self.jobs[v["job_id"]]
            return self._cancel_job(job)

    def _cancel_job(self: FakeCoderd, job: dict) -> Response:
        if job["completed_at"] is not None:
            return msg(400, "Job has already completed!")
        if job["canceled_at"] is not None:
            return msg(400, "Job has already been marked as canceled!")
        now = self.now()
        job["canceled_at"] = now
        job["updated_at"] = now
        if job["started_at"] is None:  # no worker picked it up: completed at once
            job["completed_at"] = now
            self.active_jobs.pop(job["id"], None)
        self.ws_generation += 1
        return msg(200, "Job has been marked as canceled...")

    def _get_template_version_variables(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            v = self._readable_version(req.params["templateversion"], ctx)
            if v is None:
                return not_found()
            job = self.jobs[v["job_id"]]
            if job["completed_at"] is None:
                return msg(403, "Template version job has not finished")
            out = []
            for var in v["variables"]:
                var = dict(var)
                if var["sensitive"]:
                    var["value"] = "*redacted*"
                    if var["default_value"]:
                        var["default_value"] = "*redacted*"
                out.append(var)
            return Response(200, out)

    # ==================================================================== templates
    def _template_readable(self: FakeCoderd, t: dict, ctx: Ctx) -> bool:
        if ctx.is_template_admin:
            return True
        if ctx.user["id"] in t["user_acl"]:
            return True
        return any(gid in ctx.user["org_ids"] for gid in t["group_acl"])

    def _template_json(self: FakeCoderd, t: dict) -> dict:
        org = self.orgs.get(t["organization_id"], {})
        creator = self.users.get(t["created_by"], {})
        return {
            "id": t["id"], "created_at": rfc3339(t["created_at"]), "updated_at": rfc3339(t["updated_at"]),
            "organization_id": t["organization_id"], "organization_name": org.get("name", ""),
            "organization_display_name": org.get("display_name", ""), "organization_icon": org.get("icon", ""),
            "name": t["name"], "display_name": t["display_name"], "provisioner": "terraform",
            "active_version_id": t["active_version_id"], "active_user_count": 0,
            # Capitalised: codersdk.TransitionStats has no json tags (swagger.json says p50/p95; BEHAVIOR.md summary).
            "build_time_stats": {tr: {"P50": None, "P95": None} for tr in ("start", "stop", "delete")},
            "description": t["description"], "deprecated": bool(t["deprecation_message"]),
            "deprecation_message": t["deprecation_message"], "icon": t["icon"],
            "default_ttl_ms": t["default_ttl_ms"], "activity_bump_ms": t["activity_bump_ms"],
            "autostop_requirement": {"days_of_week": list(t["autostop_days"]), "weeks": t["autostop_weeks"]},
            "autostart_requirement": {"days_of_week": list(t["autostart_days"])},
            "created_by_id": t["created_by"], "created_by_name": creator.get("username", ""),
            "allow_user_autostart": t["allow_user_autostart"], "allow_user_autostop": t["allow_user_autostop"],
            "allow_user_cancel_workspace_jobs": t["allow_user_cancel_workspace_jobs"],
            "failure_ttl_ms": t["failure_ttl_ms"], "time_til_dormant_ms": t["time_til_dormant_ms"],
            "time_til_dormant_autodelete_ms": t["time_til_dormant_autodelete_ms"],
            "require_active_version": t["require_active_version"], "max_port_share_level": t["max_port_share_level"],
            **({"use_classic_parameter_flow": t["use_classic_parameter_flow"]} if self.behaviour.parameter_flow else {}),
        }

    def _template_by_name(self: FakeCoderd, org_id: str, name: str) -> dict | None:
        for t in self.templates.values():
            if t["organization_id"] == org_id and not t["deleted"] and t["name"].lower() == name.lower():
                return t
        return None

    def _template_param(self: FakeCoderd, req: Request, ctx: Ctx) -> dict | Response:
        tid = req.params["template"]
        if not is_uuid(tid):
            return msg(400, 'Invalid UUID "%s".' % tid)
        t = self.templates.get(norm_uuid(tid))
        if t is None or t["deleted"] or not self._template_readable(t, ctx):
            return not_found()
        return t

    @staticmethod
    def _schedule_errors(body: dict, fields: tuple[str, ...]) -> list[dict]:
        errs = []
        for f in fields:
            if body.get(f, 0) < 0:
                errs.append({"field": f, "detail": "Must be a positive integer."})
        req = body.get("autostop_requirement")
        if isinstance(req, dict):
            weeks = req.get("weeks", 0)
            if not isinstance(weeks, int) or weeks < 0 or weeks > 16:
                errs.append({"field": "autostop_requirement.weeks", "detail": "Must be between 0 and 16."})
            for day in req.get("days_of_week") or []:
                if day not in WEEKDAYS:
                    errs.append({"field": "autostop_requirement.days_of_week", "detail": f'invalid day "{day}"'})
        req = body.get("autostart_requirement")
        if isinstance(req, dict):
            for day in req.get("days_of_week") or []:
                if day not in WEEKDAYS:
                    errs.append({"field": "autostart_requirement.days_of_week", "detail": f'invalid day "{day}"'})
        return errs

    def _post_template(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        org = self._org_param(req.params["organization"], ctx)
        if isinstance(org, Response):
            return org
        body = read_json(req, {
            "name": "str", "display_name": "str", "description": "str", "icon": "str", "template_version_id": "uuid",
            "default_ttl_ms": "int", "activity_bump_ms": "int", "allow_user_cancel_workspace_jobs": "bool",
            "disable_everyone_group_access": "bool", "require_active_version": "bool", "max_port_share_level": "str",
            "failure_ttl_ms": "int", "dormant_ttl_ms": "int", "delete_ttl_ms": "int", "autostop_requirement": "dict",
            "autostart_requirement": "dict", "allow_user_autostart": "bool", "allow_user_autostop": "bool",
            "template_use_classic_parameter_flow": "bool"})
        errors: list[tuple[str, str, Any]] = []
        name = body.get("name", "")
        if not name_valid(name):
            errors.append(("name", "template_name", name))
        if not display_name_valid(body.get("display_name", "")):
            errors.append(("display_name", "template_display_name", body.get("display_name")))
        if len(body.get("description", "")) >= 128:
            errors.append(("description", "lt", body["description"]))
        if not body.get("template_version_id"):
            errors.append(("template_version_id", "required", "00000000-0000-0000-0000-000000000000"))
        if errors:
            return validation_failed(errors)
        with self.lock:
            if self._template_by_name(org["id"], name) is not None:
                return msg(409, f'Template with name "{name}" already exists.', validations=[
                    {"field": "name", "detail": "This value is already in use and should be unique."}])
            vid = body["template_version_id"]
            v = self.versions.get(vid)
            if v is None or v["organization_id"] != org["id"]:
                return msg(404, f'Template version "{vid}" not found.', validations=[
                    {"field": "template_version_id", "detail": "Template version does not exist"}])
            if v["archived"]:
                return msg(400, f"Template version {vid} is archived.", validations=[
                    {"field": "template_version_id", "detail": "Template version is archived"}])
            if v["template_id"]:
                return msg(400, f"Template version {vid} is already part of a template", validations=[
                    {"field": "template_version_id", "detail": "Template version is already part of a template"}])
            errs = self._schedule_errors(body, ("default_ttl_ms", "activity_bump_ms", "failure_ttl_ms",
                                                "dormant_ttl_ms", "delete_ttl_ms"))
            if errs:
                return msg(400, "Invalid create template request.", validations=errs)
            if "max_port_share_level" in body:
                return msg(400, "Restricting port sharing level is an enterprise feature that is not enabled.")
            if not ctx.is_template_admin:
                return msg(500, "Internal error inserting template.", "insert template: unauthorized: rbac: forbidden")
            tid = new_id()
            now = self.now()
            self.templates[tid] = {
                "id": tid, "organization_id": org["id"], "name": name, "display_name": body.get("display_name", ""),
                "description": body.get("description", ""), "icon": body.get("icon", ""),
                "created_at": now, "updated_at": now, "created_by": ctx.user["id"], "active_version_id": vid,
                "default_ttl_ms": body.get("default_ttl_ms", 0), "activity_bump_ms": body.get("activity_bump_ms", 3600000),
                # CE ignores the enterprise scheduling fields: the defaults are stored.
                "autostop_days": [], "autostop_weeks": 1, "autostart_days": list(WEEKDAYS),
                "allow_user_autostart": True, "allow_user_autostop": True,
                "allow_user_cancel_workspace_jobs": body.get("allow_user_cancel_workspace_jobs", False),
                "failure_ttl_ms": 0, "time_til_dormant_ms": 0, "time_til_dormant_autodelete_ms": 0,
                "require_active_version": False, "deprecation_message": "", "max_port_share_level": "public",
                "group_acl": {} if body.get("disable_everyone_group_access") else {org["id"]: ["read", "use"]},
                "user_acl": {}, "deleted": False,
                # Unknown to the oldest behaviour (the field is then neither stored nor shown).
                "use_classic_parameter_flow": body.get("template_use_classic_parameter_flow", False),
            }
            v["template_id"] = tid
            v["updated_at"] = now
            return Response(201, self._template_json(self.templates[tid]))

    def _list_templates(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        org = self._org_param(req.params["organization"], ctx)
        if isinstance(org, Response):
            return org
        with self.lock:
            ts = [t for t in self.templates.values() if t["organization_id"] == org["id"] and not t["deleted"]
                  and self._template_readable(t, ctx)]
            ts.sort(key=lambda t: (t["name"].lower(), t["id"]))
            return Response(200, [self._template_json(t) for t in ts])

    def _get_template_by_name(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        org = self._org_param(req.params["organization"], ctx)
        if isinstance(org, Response):
            return org
        with self.lock:
            t = self._template_by_name(org["id"], req.params["templatename"])
            if t is None or not self._template_readable(t, ctx):
                return not_found()
            return Response(200, self._template_json(t))

    def _get_template(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            t = self._template_param(req, ctx)
            if isinstance(t, Response):
                return t
            return Response(200, self._template_json(t))

    def _delete_template(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        with self.lock:
            t = self._template_param(req, ctx)
            if isinstance(t, Response):
                return t
            if not ctx.is_template_admin:
                return msg(403, "Forbidden.", "You don't have permission to delete this template.")
            if any(ws.template_id == t["id"] and not ws.deleted for ws in self.workspaces.values()):
                return msg(400, "All workspaces must be deleted before a template can be removed.")
            t["deleted"] = True
            t["updated_at"] = self.now()
        return msg(200, "Template has been deleted!")

    def _patch_template(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        body = read_json(req, {
            "name": "str", "display_name": "str", "description": "str", "icon": "str", "default_ttl_ms": "int",
            "activity_bump_ms": "int", "autostop_requirement": "dict", "autostart_requirement": "dict",
            "allow_user_autostart": "bool", "allow_user_autostop": "bool", "allow_user_cancel_workspace_jobs": "bool",
            "failure_ttl_ms": "int", "time_til_dormant_ms": "int", "time_til_dormant_autodelete_ms": "int",
            "update_workspace_last_used_at": "bool", "update_workspace_dormant_at": "bool",
            "require_active_version": "bool", "deprecation_message": "str", "disable_everyone_group_access": "bool",
            "max_port_share_level": "str", "use_classic_parameter_flow": "bool"})
        with self.lock:
            t = self._template_param(req, ctx)
            if isinstance(t, Response):
                return t
            if not ctx.is_template_admin:
                return msg(403, "Forbidden.", "You don't have permission to update this template.")
            errors: list[tuple[str, str, Any]] = []
            if body.get("name") and not name_valid(body["name"]):
                errors.append(("name", "template_name", body["name"]))
            if body.get("display_name") and not display_name_valid(body["display_name"]):
                errors.append(("display_name", "template_display_name", body["display_name"]))
            if len(body.get("description", "")) >= 128:
                errors.append(("description", "lt", body["description"]))
            if errors:
                return validation_failed(errors)
            errs = self._schedule_errors(body, ("default_ttl_ms", "activity_bump_ms", "failure_ttl_ms",
                                                "time_til_dormant_ms", "time_til_dormant_autodelete_ms"))
            for f in ("failure_ttl_ms", "time_til_dormant_ms", "time_til_dormant_autodelete_ms"):
                if 0 < body.get(f, 0) < 60000:
                    errs.append({"field": f, "detail": "Must be at least one minute (60000 ms)."})
            if errs:
                return msg(400, "Invalid request to update template metadata!", validations=errs)
            level = body.get("max_port_share_level")
            if level is not None and level != "public":
                return msg(400, "Restricting port sharing level is an enterprise feature that is not enabled.")
            name = body.get("name") or t["name"]
            if name.lower() != t["name"].lower() and self._template_by_name(t["organization_id"], name):
                return msg(409, f'Template with name "{name}" already exists.', validations=[
                    {"field": "name", "detail": "This value is already in use and should be unique."}])
            stop_req = body.get("autostop_requirement")
            start_req = body.get("autostart_requirement")
            stop_days = list(stop_req.get("days_of_week") or []) if stop_req else list(t["autostop_days"])
            stop_weeks = stop_req.get("weeks", 0) if stop_req else t["autostop_weeks"]
            start_days = list(start_req.get("days_of_week") or []) if start_req else list(t["autostart_days"])
            dep = body.get("deprecation_message")
            # A pointer on a coderd that knows it: omitted keeps the stored value.
            flow = body.get("use_classic_parameter_flow") if self.behaviour.parameter_flow else None
            unchanged = (
                name == t["name"]
                and body.get("display_name", "") == t["display_name"]
                and body.get("description", "") == t["description"]
                and body.get("icon", "") == t["icon"]
                and body.get("allow_user_autostart", False) == t["allow_user_autostart"]
                and body.get("allow_user_autostop", False) == t["allow_user_autostop"]
                and body.get("allow_user_cancel_workspace_jobs", False) == t["allow_user_cancel_workspace_jobs"]
                and body.get("default_ttl_ms", 0) == t["default_ttl_ms"]
                and body.get("activity_bump_ms", 0) == t["activity_bump_ms"]
                and sorted(stop_days) == sorted(t["autostop_days"]) and stop_weeks == t["autostop_weeks"]
                and sorted(start_days) == sorted(t["autostart_days"])
                and body.get("failure_ttl_ms", 0) == t["failure_ttl_ms"]
                and body.get("time_til_dormant_ms", 0) == t["time_til_dormant_ms"]
                and body.get("time_til_dormant_autodelete_ms", 0) == t["time_til_dormant_autodelete_ms"]
                and body.get("require_active_version", False) == t["require_active_version"]
                and (dep is None or dep == t["deprecation_message"])
                and (level is None or level == t["max_port_share_level"])
                and not (body.get("disable_everyone_group_access") and t["group_acl"])
                and (flow is None or flow == t["use_classic_parameter_flow"])
            )
            if unchanged:
                return Response(304)
            t.update(
                name=name, display_name=body.get("display_name", ""), description=body.get("description", ""),
                icon=body.get("icon", ""), default_ttl_ms=body.get("default_ttl_ms", 0),
                activity_bump_ms=body.get("activity_bump_ms", 0),
                allow_user_cancel_workspace_jobs=body.get("allow_user_cancel_workspace_jobs", False),
                updated_at=self.now(),
            )
            if dep == "":
                t["deprecation_message"] = ""  # CE can clear it, not set it
            if flow is not None:
                t["use_classic_parameter_flow"] = flow
            if body.get("disable_everyone_group_access"):
                t["group_acl"].pop(t["organization_id"], None)
            self.ws_generation += 1
            return Response(200, self._template_json(t))

    def _template_versions(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        page = pagination(req)
        if isinstance(page, Response):
            return page
        limit, offset, after = page
        include_archived = (req.arg("include_archived") or "").lower() == "true"
        with self.lock:
            t = self._template_param(req, ctx)
            if isinstance(t, Response):
                return t
            if after and after not in self.versions:
                return msg(400, f'Record at "after_id" ("{after}") does not exists.')
            vs = [v for v in self.versions.values() if v["template_id"] == t["id"]
                  and (include_archived or not v["archived"])]
            vs.sort(key=lambda v: (v["created_at"], v["id"]))
            if after:
                a = self.versions[after]
                vs = [v for v in vs if (v["created_at"], v["id"]) > (a["created_at"], a["id"])]
            vs = vs[offset:]
            if limit:
                vs = vs[:limit]
            return Response(200, [self._version_json(v) for v in vs])

    def _patch_active_version(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        body = read_json(req, {"id": "uuid"})
        if not body.get("id"):
            return validation_failed([("id", "required", "00000000-0000-0000-0000-000000000000")])
        with self.lock:
            t = self._template_param(req, ctx)
            if isinstance(t, Response):
                return t
            if not ctx.is_template_admin:
                return msg(403, "Forbidden.", "You don't have permission to update this template.")
            v = self.versions.get(body["id"])
            if v is None:
                return msg(404, "Template version not found.")
            if v["template_id"] != t["id"]:
                return msg(400, "The provided template version doesn't belong to the specified template.")
            status = self.job_status(self.jobs[v["job_id"]])
            if status != "succeeded":
                return msg(403, "Only versions that have been built successfully can be promoted.",
                           f"Attempted to promote a version with a {status} build")
            if v["archived"]:
                return msg(400, "The provided template version is archived.")
            t["active_version_id"] = v["id"]
            t["updated_at"] = self.now()
            self.ws_generation += 1
        return msg(200, "Updated the active template version!")

    # ================================================================= external auth
    def _get_external_auth(self: FakeCoderd, req: Request, ctx: Ctx) -> Response:
        # Any signed-in user; `providers` are the configured ones, `links` this user's own
        # (coderd/externalauth.go `listUserExternalAuths`, BEHAVIOR.md §11). No links here.
        providers = [{"id": p, "type": p if p in ("github", "gitlab") else "", "device": False, "display_name": p,
                      "display_icon": "", "allow_refresh": True, "allow_validate": True}
                     for p in self.external_auth_providers]
        return Response(200, {"providers": providers, "links": []})

    # ======================================================================= routes
    def register_template_routes(self: FakeCoderd) -> None:
        self.api("POST", "/files", self._post_file)
        self.api("GET", "/external-auth", self._get_external_auth)
        self.api("GET", "/files/{fileID}", self._get_file)
        self.api("POST", "/organizations/{organization}/templateversions", self._post_template_version)
        self.api("GET", "/templateversions/{templateversion}", self._get_template_version)
        self.api("GET", "/templateversions/{templateversion}/logs", self._get_template_version_logs)
        self.api("PATCH", "/templateversions/{templateversion}/cancel", self._cancel_template_version)
        self.api("GET", "/templateversions/{templateversion}/variables", self._get_template_version_variables)
        self.api("POST", "/organizations/{organization}/templates", self._post_template)
        self.api("GET", "/organizations/{organization}/templates", self._list_templates)
        self.api("GET", "/organizations/{organization}/templates/{templatename}", self._get_template_by_name)
        self.api("GET", "/templates/{template}", self._get_template)
        self.api("DELETE", "/templates/{template}", self._delete_template)
        self.api("PATCH", "/templates/{template}", self._patch_template)
        self.api("GET", "/templates/{template}/versions", self._template_versions)
        self.api("PATCH", "/templates/{template}/versions", self._patch_active_version)
