"""reap: stop idle workspaces, check per-user quotas, find orphaned workspace pods.

One pass, plan first, then apply:
1. Parse the policy (REAP_IDLE_AFTER, REAP_EXEMPT, REAP_RULES_FILE) and, when
   REAP_WORKSPACE_NAMESPACE is set, the Kubernetes configuration: a mistake exits 2 before
   any request that writes.
2. Stream workspaces from coderd page by page with a server-side filter: `q=status:running`,
   or no filter when REAP_MAX_WORKSPACES_PER_USER is set (the totals need every workspace, and
   one unfiltered pass is cheaper than a running pass plus a per-owner count per user).
   "Now" is coderd's `Date` header of the first page, never the pod clock.
   Only per-owner counters and a heap of the REAP_MAX_STOPS oldest idle workspaces are kept.
3. Quotas: owners over the limits are reported; with REAP_QUOTA_ACTION=stop only the violating
   owners are listed again (`q=owner:<name> status:running`) to pick their least recently used.
4. Kubernetes (optional): ResourceQuota usage, and workspace pods/Deployments and credentials
   Secrets (`coder-<id>-credentials`, a developer's GitHub token) whose workspace is gone or
   stopped, looked up with `q=id:<uuid>,...` in batches.
5. Apply (not with --dry-run): each stop re-reads its workspace and re-checks the decision with
   a fresh Date (the listing may be minutes old at scale), then posts a `stop` build; 409 means
   a build started meanwhile: skipped as busy. Orphans are deleted only with --delete-orphans.
Every decision is one log event; a `summary` event closes the run. Exit 0 when the pass
completed (findings are not failures), 1 when it could not (API down, a stop failed), 2 for
bad configuration.
"""

from __future__ import annotations

import email.utils
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from jobs.coder import CoderClient, client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_NOT_CONVERGED, EXIT_OK, CoderAPIError, ConfigError, JobError
from jobs.log import summary as log_summary
from jobs.models import Workspace
from jobs.plan import Action
from jobs.reap_plan import (
    Candidate,
    Scan,
    classify,
    credentials_secret_workspace,
    is_running,
    is_stopped,
    plan_quota_stops,
    quota_violations,
)
from jobs.reap_rules import Policy, policy_from_settings
from jobs.settings import ReapSettings

WORKSPACE_SELECTOR = "app.kubernetes.io/name=coder-workspace"
WORKSPACE_ID_LABEL = "com.coder.workspace.id"
# RBAC cannot filter by label, so the reaper's Role grants list/delete on every Secret of the
# workspace namespace; this selector (and the exact name check below) keeps it to the templates'
# credentials Secrets. Only their metadata is ever read (kube.list_secret_metadata).
CREDENTIALS_SELECTOR = f"{WORKSPACE_SELECTOR},{WORKSPACE_ID_LABEL}"
ID_BATCH = 50  # 50 uuids keep the query string under 2 KiB
QUOTA_WARN_RATIO = 0.9
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_WARN_KINDS = {"quota-violation", "quota-usage-high", "orphan", "quota-unresolved", "stop-failed", "delete-failed"}
_BULK_KINDS = {"deferred", "exempt", "unknown", "busy"}  # one per workspace: the console counts them
_ORPHAN_COUNTER = {"pod": "orphans", "deployment": "orphan_deployments", "secret": "orphan_secrets"}
_DELETE_ORDER = {"deployment": 0, "pod": 1, "secret": 2}  # controllers first, the credentials last


@dataclass
class Reaper:
    client: CoderClient
    settings: ReapSettings
    policy: Policy
    ctx: RunContext
    kube: Any = None  # kubernetes ApiClient when REAP_WORKSPACE_NAMESPACE is set
    counts: dict[str, int] = field(default_factory=dict)
    list_requests: int = 0
    now: datetime | None = None

    # -- output --------------------------------------------------------------
    def emit(self, action: Action, phase: str = "plan") -> None:
        level = "warning" if action.kind in _WARN_KINDS else "info"
        event = f"would {action.kind}" if self.ctx.dry_run and action.kind == "stop" else action.kind
        getattr(self.ctx.log, level)(event, phase=phase, dry_run=self.ctx.dry_run, **action.as_dict(),
                                     **({"bulk": True} if action.kind in _BULK_KINDS and phase == "plan" else {}))

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    # -- listing -------------------------------------------------------------
    def list_workspaces(self, q: str) -> Iterator[Workspace]:
        """Offset pages of `q`, one page in memory at a time (see CoderClient.iter_workspaces)."""
        size, offset = self.settings.reap_page_size, 0
        while True:
            page, count = self.client.workspaces_page(q, size, offset)
            self.list_requests += 1
            yield from page
            offset += len(page)
            if not page or offset >= count:
                return

    def server_now(self) -> datetime:
        if self.client.server_date is None:
            raise JobError("coderd's responses carry no Date header; the reaper will not fall back to the pod clock")
        return self.client.server_date

    # -- plan ----------------------------------------------------------------
    def plan(self) -> tuple[list[Candidate], list[Candidate]]:
        s = self.settings
        q = "" if s.reap_max_workspaces_per_user is not None else "status:running"
        rows = self.list_workspaces(q)
        first = next(rows, None)  # the first response fixes "now"
        self.now = self.server_now()
        skew = (self.now - datetime.now(timezone.utc)).total_seconds()
        self.ctx.log.info("scan", q=q or "(all)", server_now=self.now.isoformat(), pod_clock_skew_s=round(skew, 1),
                          page_size=s.reap_page_size)
        scan = Scan(self.now, self.policy, s.reap_max_stops, self.emit, count_totals=bool(q == ""))
        if first is not None:
            scan.add(first)
            for ws in rows:
                scan.add(ws)
        result = scan.finish()
        for key, n in result.counts.items():
            self.bump(key, n)

        idle_stops = result.stops
        for c in idle_stops:
            self.emit(Action("stop", c.target, "idle", c.details(self.now)))

        violations = quota_violations(result, s.reap_max_workspaces_per_user, s.reap_max_running_per_user)
        for v in violations:
            self.emit(v)
        self.bump("quota_violations", len(violations))

        quota_stops: list[Candidate] = []
        if s.reap_quota_action == "stop" and s.reap_max_running_per_user is not None:
            limit = s.reap_max_running_per_user
            planned = {c.id for c in idle_stops}
            remaining = s.reap_max_stops - len(idle_stops)
            for v in violations:
                if v.details["quota"] != "running":
                    continue
                owner = v.details["owner"]
                qp = plan_quota_stops(self.list_workspaces(f"owner:{owner} status:running"), limit, planned,
                                      self.now, self.policy, keep=max(0, remaining))
                for c in qp.stops:
                    self.emit(Action("stop", c.target, "quota", {**c.details(self.now), "running": qp.running,
                                                                  "limit": limit}))
                    planned.add(c.id)
                quota_stops.extend(qp.stops)
                remaining -= len(qp.stops)
                if qp.deferred:
                    self.bump("deferred", qp.deferred)
                    self.emit(Action("deferred", f"user/{owner}", f"quota stops over REAP_MAX_STOPS={s.reap_max_stops}",
                                     {"owner": owner, "count": qp.deferred}))
                if qp.unresolved:
                    self.emit(Action("quota-unresolved", f"user/{owner}",
                                     "running over the limit, but the rest are exempt, busy or of unknown use",
                                     {"owner": owner, "count": qp.unresolved, "running": qp.running, "limit": limit}))
        self.bump("planned_stops", len(idle_stops) + len(quota_stops))
        self.bump("quota_stops", len(quota_stops))
        return idle_stops, quota_stops

    # -- apply: stops --------------------------------------------------------
    def _recheck(self, c: Candidate, reason: str) -> str | None:
        """Read the workspace again; None when the stop still stands, else why not."""
        response = self.client.request("GET", f"/api/v2/workspaces/{c.id}", ok=(200, 404, 410))
        if response.status_code != 200:
            return "gone"
        ws = Workspace.model_validate(response.json())
        now = _response_date(response) or self.server_now()
        v = classify(ws, now, self.policy)
        if v.kind == "busy":
            return "busy"
        if reason == "idle" and v.kind != "idle":
            return f"no longer idle ({v.kind})"
        if reason == "quota" and (v.kind not in ("idle", "active") or not is_running(ws)):
            return f"no longer stoppable ({v.kind})"
        return None

    def _stop_one(self, c: Candidate, reason: str) -> tuple[Candidate, str, str, dict[str, Any]]:
        try:
            why = self._recheck(c, reason)
            if why == "busy":
                return c, "busy", "a build became active since the listing", {}
            if why:
                return c, "skipped", why, {}
            build = self.client.stop_workspace(c.id)
            return c, "stopped", reason, {"build_id": build.id, "build_number": build.build_number}
        except CoderAPIError as err:
            if err.status == 409:
                return c, "busy", "409: a workspace build is already active", {}
            if err.status in (404, 410):
                return c, "skipped", "gone", {}
            return c, "stop-failed", err.describe(), {"status": err.status}
        except JobError as err:  # CoderUnavailable: counted as a failure, the run exits 1
            return c, "stop-failed", str(err), {}

    def apply_stops(self, stops: list[tuple[Candidate, str]]) -> None:
        if not stops:
            return
        with ThreadPoolExecutor(max_workers=self.settings.reap_concurrency, thread_name_prefix="reap-stop") as pool:
            futures = [pool.submit(self._stop_one, c, reason) for c, reason in stops]
            try:
                for fut in futures:
                    c, outcome, why, extra = fut.result()
                    self.bump({"stopped": "stopped", "busy": "busy", "skipped": "changed", "stop-failed": "failed"}[outcome])
                    self.emit(Action(outcome, c.target, why, {"workspace_id": c.id, **extra}), phase="apply")
            except BaseException:
                # SIGTERM (Terminated) lands here, in the main thread: issue no further stop builds.
                # Without this the pool's exit would run every queued stop before the job exits.
                for fut in futures:
                    fut.cancel()
                raise

    # -- Kubernetes ----------------------------------------------------------
    def kube_checks(self) -> list[tuple[str, str, str, str]]:
        """Quota usage and orphans; returns orphan objects to delete as (kind, name, uid, workspace_id)."""
        if self.kube is None:
            return []
        from kubernetes.utils import parse_quantity

        from jobs import kube  # lazy: only the reaper with a namespace needs Kubernetes

        ns = self.settings.reap_workspace_namespace
        try:
            self._quota_usage(kube.list_resource_quotas(self.kube, ns), parse_quantity)
        except kube.KubeAPIError as exc:
            self.bump("failed")
            self.emit(Action("kube-check-failed", f"resourcequotas/{ns}", str(exc)), phase="plan")

        by_id: dict[str, list[tuple[str, str, str]]] = {}
        for kind, lister in (("pod", kube.list_pods), ("deployment", kube.list_deployments)):
            try:
                for obj in lister(self.kube, ns, WORKSPACE_SELECTOR):
                    labels = obj.metadata.labels or {}
                    wid = str(labels.get(WORKSPACE_ID_LABEL, "")).lower()
                    if not _UUID.match(wid):
                        self.emit(Action("unlabelled", f"{kind}/{ns}/{obj.metadata.name}",
                                         f"no valid {WORKSPACE_ID_LABEL} label; never deleted"))
                        continue
                    by_id.setdefault(wid, []).append((kind, obj.metadata.name, obj.metadata.uid))
            except kube.KubeAPIError as exc:
                if kind == "pod":
                    raise JobError(f"cannot list workspace pods in {ns}: {exc}") from None
                # Workspace pods belong to Deployments (the templates' kubernetes_deployment_v1): deleting
                # only the pod is undone by its ReplicaSet. Say so rather than fail the run.
                self.ctx.log.warning("cannot list workspace Deployments; orphan deletion limited to pods",
                                     namespace=ns, status=exc.status)
        self._credentials_secrets(kube, ns, by_id)

        ids = sorted(by_id)
        live: dict[str, Workspace] = {}
        for i in range(0, len(ids), ID_BATCH):
            for ws in self.list_workspaces("id:" + ",".join(ids[i:i + ID_BATCH])):
                live[ws.id.lower()] = ws
        doomed: list[tuple[str, str, str, str]] = []
        for wid in ids:
            ws = live.get(wid)
            if ws is not None and not is_stopped(ws):
                continue
            why = "no such workspace in coderd (deleted, or the database was reset)" if ws is None else \
                f"workspace {ws.owner_name}/{ws.name} is stopped"
            for kind, name, uid in by_id[wid]:
                self.bump(_ORPHAN_COUNTER[kind])
                self.emit(Action("orphan", f"{kind}/{ns}/{name}", why, {"workspace_id": wid}))
                doomed.append((kind, name, uid, wid))
        return doomed

    def _credentials_secrets(self, kube: Any, ns: str, by_id: dict[str, list[tuple[str, str, str]]]) -> None:
        """Add the templates' credentials Secrets to `by_id`. Listed as metadata only: the reaper
        never holds the GitHub and agent tokens they carry."""
        try:
            for meta in kube.list_secret_metadata(self.kube, ns, CREDENTIALS_SELECTOR):
                wid = credentials_secret_workspace(meta.name, dict(meta.labels))
                if wid is None:
                    self.emit(Action("unlabelled", f"secret/{ns}/{meta.name}",
                                     f"not a credentials Secret (coder-<{WORKSPACE_ID_LABEL}>-credentials); never deleted"))
                    continue
                by_id.setdefault(wid, []).append(("secret", meta.name, meta.uid))
        except kube.KubeAPIError as exc:
            self.ctx.log.warning("cannot list workspace credentials Secrets; they are not checked for orphans",
                                 namespace=ns, status=exc.status)

    def _quota_usage(self, quotas: list[Any], parse_quantity: Callable[[Any], Any]) -> None:
        for rq in quotas:
            hard = (rq.status.hard if rq.status else None) or {}
            used = (rq.status.used if rq.status else None) or {}
            for resource in sorted(hard):
                try:
                    h, u = parse_quantity(hard[resource]), parse_quantity(used.get(resource, "0"))
                except ValueError:
                    continue
                ratio = float(u / h) if h else (1.0 if u else 0.0)
                kind = "quota-usage-high" if ratio >= QUOTA_WARN_RATIO else "quota-usage"
                self.emit(Action(kind, f"resourcequota/{rq.metadata.namespace}/{rq.metadata.name}",
                                 f"{resource} at {ratio:.0%} of hard" if kind == "quota-usage-high" else "",
                                 {"resource": resource, "used": str(used.get(resource, "0")), "hard": str(hard[resource]),
                                  "percent": round(ratio * 100, 1)}))
                if kind == "quota-usage-high":
                    self.bump("kube_quota_warnings")

    def delete_orphans(self, doomed: list[tuple[str, str, str, str]]) -> None:
        from jobs import kube

        ns = self.settings.reap_workspace_namespace
        # Deployments first, so their ReplicaSets do not recreate the pods we delete next.
        deleters = {"deployment": kube.delete_deployment, "pod": kube.delete_pod, "secret": kube.delete_secret}
        for kind, name, uid, wid in sorted(doomed, key=lambda d: _DELETE_ORDER[d[0]]):
            delete = deleters[kind]
            try:
                if not delete(self.kube, ns, name, uid):
                    continue  # already gone
            except kube.KubeAPIError as exc:
                self.bump("failed")
                self.emit(Action("delete-failed", f"{kind}/{ns}/{name}", str(exc)), phase="apply")
                continue
            self.bump("deleted")
            self.emit(Action("deleted", f"{kind}/{ns}/{name}", "orphan", {"workspace_id": wid}), phase="apply")


def _response_date(response: Any) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(response.headers.get("Date", "")).astimezone(timezone.utc)
    except (TypeError, ValueError):
        return None


def kube_api_client() -> Any:
    from jobs.kube import api_client  # lazy: only the reaper with a namespace needs Kubernetes

    return api_client()


SUMMARY_KEYS = ("scanned", "running", "idle", "stopped", "planned_stops", "deferred", "exempt", "busy", "unknown",
                "quota_violations", "quota_stops", "orphans", "orphan_deployments", "orphan_secrets", "deleted", "changed",
                "failed")


def run(settings: ReapSettings, ctx: RunContext) -> int:
    started = time.monotonic()
    policy = policy_from_settings(settings.reap_idle_after, settings.reap_exempt, settings.reap_rules_file)
    delete_orphans = bool(ctx.flags.get("delete_orphans"))
    if delete_orphans and not settings.reap_workspace_namespace:
        raise ConfigError("--delete-orphans needs REAP_WORKSPACE_NAMESPACE (the namespace of the workspace pods)")
    kube = kube_api_client() if settings.reap_workspace_namespace else None
    try:
        with client_from_settings(settings) as client:
            client.wait_ready()
            reaper = Reaper(client, settings, policy, ctx, kube=kube)
            idle_stops, quota_stops = reaper.plan()
            doomed = reaper.kube_checks()
            if not ctx.dry_run:
                reaper.apply_stops([(c, "idle") for c in idle_stops] + [(c, "quota") for c in quota_stops])
                if delete_orphans and doomed:
                    reaper.delete_orphans(doomed)
            summary = {k: reaper.counts.get(k, 0) for k in SUMMARY_KEYS}
            changed = summary["planned_stops"] if ctx.dry_run else summary["stopped"] + summary["deleted"]
            log_summary(ctx.log, checked=summary["scanned"], **{**summary, "changed": changed}, dry_run=ctx.dry_run,
                        list_requests=reaper.list_requests, server_now=reaper.now.isoformat() if reaper.now else None,
                        duration_s=round(time.monotonic() - started, 3))
    finally:
        if kube is not None:
            kube.close()
    if summary["failed"]:
        ctx.log.error("some actions failed; see the stop-failed/delete-failed events", failed=summary["failed"],
                      exit_code=EXIT_NOT_CONVERGED)
        return EXIT_NOT_CONVERGED
    return EXIT_OK
