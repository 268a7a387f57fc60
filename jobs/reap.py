"""reap: stop idle workspaces, check per-user quotas, find orphaned workspace pods.

One pass: observe (this module) -> plan (jobs/reap_plan.py, pure) -> apply (this module):
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
Every decision is one log event (the per-workspace findings as the listing streams by, so that
memory stays flat); a `summary` event closes the run. Exit 0 when the pass
completed (findings are not failures), 1 when it could not (API down, a stop failed), 2 for
bad configuration.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Literal, assert_never

from jobs.coder import CoderClient, client_from_settings
from jobs.context import RunContext
from jobs.errors import EXIT_NOT_CONVERGED, EXIT_OK, CoderAPIError, JobError
from jobs.log import summary as log_summary
from jobs.models import Workspace
from jobs.plan import Plan, Report, log_action
from jobs.reap_plan import (
    WORKSPACE_ID_LABEL,
    Candidate,
    Cluster,
    DeleteOrphan,
    ObjectKind,
    QuotaPlan,
    QuotaViolation,
    ReapAction,
    Scan,
    ScanResult,
    Stop,
    plan,
    quota_stop_plans,
    quota_violations,
    recheck,
    workspace_ids,
)
from jobs.reap_rules import Policy
from jobs.settings import ReapSettings

WORKSPACE_SELECTOR = "app.kubernetes.io/name=coder-workspace"
# RBAC cannot filter by label, so the reaper's Role grants list/delete on every Secret of the
# workspace namespace; this selector (and the exact name check in reap_plan) keeps it to the
# templates' credentials Secrets. Only their metadata is ever read (kube.list_secret_metadata).
CREDENTIALS_SELECTOR = f"{WORKSPACE_SELECTOR},{WORKSPACE_ID_LABEL}"
ID_BATCH = 50  # 50 uuids keep the query string under 2 KiB
SUMMARY_KEYS = ("scanned", "running", "idle", "stopped", "planned_stops", "deferred", "exempt", "busy", "unknown",
                "quota_violations", "quota_stops", "orphans", "orphan_deployments", "orphan_secrets", "deleted", "skipped",
                "failed")
_OUTCOME_COUNTER = {"stopped": "stopped", "busy": "busy", "skipped": "skipped", "stop-failed": "failed"}
# What apply did, one event each (phase=apply).
StopOutcome = Literal["stopped", "busy", "skipped", "stop-failed"]
Outcome = Report[Literal[StopOutcome, "deleted", "delete-failed"]]


# -- observe -------------------------------------------------------------------------------
class Listing:
    """coderd's workspace pager, counting its requests; `now` is coderd's Date on the first page."""

    def __init__(self, client: CoderClient, page_size: int) -> None:
        self.client = client
        self.page_size = page_size
        self.requests = 0
        self.now: datetime | None = None

    def pages(self, q: str) -> Iterator[list[Workspace]]:
        for page in self.client.workspace_pages(q, self.page_size):
            self.requests += 1
            if self.now is None:
                self.now = server_now(self.client)
            yield page

    def workspaces(self, q: str) -> Iterator[Workspace]:
        for page in self.pages(q):
            yield from page


def server_now(client: CoderClient) -> datetime:
    if client.server_date is None:
        raise JobError("coderd's responses carry no Date header; the reaper will not fall back to the pod clock")
    return client.server_date


def scan_workspaces(listing: Listing, settings: ReapSettings, policy: Policy, log: Any, dry_run: bool) -> ScanResult:
    """coderd's listing streamed through the pure Scan; its findings are logged as they are decided."""
    q = "" if settings.reap_max_workspaces_per_user is not None else "status:running"
    rows = listing.workspaces(q)
    first = next(rows, None)  # the first response fixes "now"
    now = listing.now or server_now(listing.client)
    skew = (now - datetime.now(UTC)).total_seconds()
    log.info("scan", q=q or "(all)", server_now=now.isoformat(), pod_clock_skew_s=round(skew, 1),
             page_size=settings.reap_page_size)
    scan = Scan(now, policy, settings.reap_max_stops, count_totals=q == "")
    for ws in chain((first,), rows) if first is not None else ():
        for finding in scan.add(ws):
            log_action(log, finding, dry_run)
    return scan.finish()


def observe_cluster(api: Any, listing: Listing, ns: str, log: Any) -> Cluster:
    """ResourceQuota usage, the workspace pods, Deployments and credentials Secrets (metadata only),
    and what coderd knows of the workspaces they name."""
    from jobs import kube  # lazy: only the reaper with a namespace needs Kubernetes

    usage: list[kube.QuotaUsage] | None = None
    usage_error = ""
    try:
        usage = kube.quota_usage(kube.list_resource_quotas(api, ns))
    except kube.KubeAPIError as exc:
        usage_error = str(exc)
    objects: list[tuple[ObjectKind, kube.ObjectMetadata]] = []
    try:
        objects.extend(("pod", meta) for meta in kube.list_pods(api, ns, WORKSPACE_SELECTOR))
    except kube.KubeAPIError as exc:
        raise JobError(f"cannot list workspace pods in {ns}: {exc}") from None
    try:
        objects.extend(("deployment", meta) for meta in kube.list_deployments(api, ns, WORKSPACE_SELECTOR))
    except kube.KubeAPIError as exc:
        # Workspace pods belong to Deployments (the templates' kubernetes_deployment_v1): deleting
        # only the pod is undone by its ReplicaSet. Say so rather than fail the run.
        log.warning("cannot list workspace Deployments; orphan deletion limited to pods", namespace=ns, status=exc.status)
    try:
        objects.extend(("secret", meta) for meta in kube.list_secret_metadata(api, ns, CREDENTIALS_SELECTOR))
    except kube.KubeAPIError as exc:
        log.warning("cannot list workspace credentials Secrets; they are not checked for orphans",
                    namespace=ns, status=exc.status)
    ids = workspace_ids(objects)
    live: dict[str, Workspace] = {}
    for i in range(0, len(ids), ID_BATCH):
        live.update((ws.id.lower(), ws) for ws in listing.workspaces("id:" + ",".join(ids[i:i + ID_BATCH])))
    return Cluster(ns, usage, objects, live, usage_error)


def observe_and_plan(listing: Listing, api: Any, settings: ReapSettings, policy: Policy, log: Any, *,
                     dry_run: bool, delete_orphans: bool) -> Plan[ReapAction]:
    scan = scan_workspaces(listing, settings, policy, log, dry_run)
    violations = quota_violations(scan, settings.reap_max_workspaces_per_user, settings.reap_max_running_per_user)
    quota: list[tuple[str, QuotaPlan]] = []
    if settings.reap_quota_action == "stop" and settings.reap_max_running_per_user is not None:
        quota = quota_stop_plans(violations, lambda owner: listing.workspaces(f"owner:{owner} status:running"), scan,
                                 policy, settings.reap_max_running_per_user, settings.reap_max_stops)
    cluster = None
    if api is not None and settings.reap_workspace_namespace:
        cluster = observe_cluster(api, listing, settings.reap_workspace_namespace, log)
    return plan(scan, violations, quota, cluster, max_stops=settings.reap_max_stops,
                running_limit=settings.reap_max_running_per_user, delete_orphans=delete_orphans)


# -- apply ---------------------------------------------------------------------------------
def writes(p: Plan[ReapAction]) -> tuple[list[Stop], list[DeleteOrphan]]:
    """The stops and the deletions the plan makes, in its order; the rest was only reported."""
    stops: list[Stop] = []
    deletions: list[DeleteOrphan] = []
    for action in p:
        match action:
            case Stop():
                stops.append(action)
            case DeleteOrphan():
                if action.writes:  # --delete-orphans
                    deletions.append(action)
            case QuotaViolation() | Report():
                pass
            case _:
                assert_never(action)
    return stops, deletions


def _stop_one(client: CoderClient, policy: Policy, c: Candidate, reason: str) -> tuple[StopOutcome, str, dict[str, object]]:
    """(outcome, why, fields): the workspace is read again first, and stopped only if the stop still stands."""
    try:
        # The Date of the re-read, or of a concurrent stop's response: either is coderd's now to
        # well within the minutes an idle-after is made of.
        why = recheck(client.workspace(c.id), server_now(client), policy, reason)
        if why == "busy":
            return "busy", "a build became active since the listing", {}
        if why:
            return "skipped", why, {}
        build = client.stop_workspace(c.id)
        return "stopped", reason, {"build_id": build.id, "build_number": build.build_number}
    except CoderAPIError as err:
        if err.status == 409:
            return "busy", "409: a workspace build is already active", {}
        if err.status in (404, 410):
            return "skipped", "gone", {}
        return "stop-failed", err.describe(), {"status": err.status}
    except JobError as err:  # CoderUnavailable: counted as a failure, the run exits 1
        return "stop-failed", str(err), {}


def apply_stops(stops: list[Stop], client: CoderClient, policy: Policy, concurrency: int, log: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    if not stops:
        return counts
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reap-stop") as pool:
        futures = [(a, pool.submit(_stop_one, client, policy, a.candidate, a.reason)) for a in stops]
        try:
            for action, fut in futures:
                outcome, why, extra = fut.result()
                counts[_OUTCOME_COUNTER[outcome]] += 1
                log_action(log, Outcome(kind=outcome, target=action.target, reason=why, warn=outcome == "stop-failed",
                                        details={"workspace_id": action.candidate.id, **extra}),
                           dry_run=False, phase="apply")
        except BaseException:
            # SIGTERM (Terminated) lands here, in the main thread: issue no further stop builds.
            # Without this the pool's exit would run every queued stop before the job exits.
            for _, fut in futures:
                fut.cancel()
            raise
    return counts


def delete_orphans(deletions: list[DeleteOrphan], api: Any, ns: str, log: Any) -> Counter[str]:
    """The orphans the plan deletes (--delete-orphans), in its order: Deployments first."""
    from jobs import kube

    deleters = {"deployment": kube.delete_deployment, "pod": kube.delete_pod, "secret": kube.delete_secret}
    counts: Counter[str] = Counter()
    for orphan in deletions:
        try:
            deleted = deleters[orphan.resource](api, ns, orphan.name, orphan.uid)
        except kube.KubeAPIError as exc:
            counts["failed"] += 1
            log_action(log, Outcome(kind="delete-failed", target=orphan.target, reason=str(exc), warn=True),
                       dry_run=False, phase="apply")
            continue
        if deleted:  # False: already gone
            counts["deleted"] += 1
            log_action(log, Outcome(kind="deleted", target=orphan.target, reason="orphan",
                                    details={"workspace_id": orphan.workspace_id}), dry_run=False, phase="apply")
    return counts


# -- the job -------------------------------------------------------------------------------
def kube_api_client() -> Any:
    from jobs.kube import api_client  # lazy: only the reaper with a namespace needs Kubernetes

    return api_client()


def run(settings: ReapSettings, ctx: RunContext) -> int:
    started = time.monotonic()
    policy = settings.policy()
    orphans_deleted = settings.reap_delete_orphans
    ns = settings.reap_workspace_namespace
    api = kube_api_client() if ns else None
    try:
        with client_from_settings(settings) as client:
            client.wait_ready()
            listing = Listing(client, settings.reap_page_size)
            p = observe_and_plan(listing, api, settings, policy, ctx.log, dry_run=ctx.dry_run,
                                 delete_orphans=orphans_deleted)
            for action in p:
                log_action(ctx.log, action, ctx.dry_run)
            counts = Counter(p.counts)
            if not ctx.dry_run:
                stops, deletions = writes(p)
                counts.update(apply_stops(stops, client, policy, settings.reap_concurrency, ctx.log))
                if api is not None and ns:
                    counts.update(delete_orphans(deletions, api, ns, ctx.log))
            summary = {k: counts.get(k, 0) for k in SUMMARY_KEYS}
            changed = summary["planned_stops"] if ctx.dry_run else summary["stopped"] + summary["deleted"]
            log_summary(ctx.log, checked=summary["scanned"], **{**summary, "changed": changed}, dry_run=ctx.dry_run,
                        list_requests=listing.requests, server_now=listing.now.isoformat() if listing.now else None,
                        duration_s=round(time.monotonic() - started, 3))
    finally:
        if api is not None:
            api.close()
    if summary["failed"]:
        ctx.log.error("some actions failed; see the stop-failed/delete-failed events", failed=summary["failed"],
                      exit_code=EXIT_NOT_CONVERGED)
        return EXIT_NOT_CONVERGED
    return EXIT_OK
