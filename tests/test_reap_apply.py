"""The reaper's apply step against a stub client: 409 busy, re-check, failures, Date header as now;
its Kubernetes checks against the real API server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jobs.errors import CoderAPIError, CoderUnavailable, JobError
from jobs.models import WorkspaceBuild
from jobs.reap import Listing, apply_stops, delete_orphans, observe_and_plan, writes
from jobs.reap_plan import DeleteOrphan, Stop
from jobs.reap_rules import Policy
from jobs.settings import ReapSettings
from tests.test_reap_plan import NOW, H, ws


class Log:
    def __init__(self):
        self.events = []

    def __getattr__(self, level):
        return lambda event, **kw: self.events.append({"level": level, "event": event, **kw})


class StubClient:
    """The CoderClient calls the reaper makes, over a list of workspaces; every answer dated `date`."""

    def __init__(self, rows, *, fresh=None, stop_error=None, date=NOW):
        self.rows, self.fresh, self.stop_error, self.date = rows, fresh or {}, stop_error, date
        self.server_date = None
        self.stops, self.queries = [], []

    def listed(self, q):
        return self.rows

    def workspace_pages(self, q, page_size):
        self.queries.append(q)
        rows = self.listed(q)
        offset = 0
        while True:
            self.server_date = self.date
            page = rows[offset:offset + page_size]
            yield page
            offset += len(page)
            if not page or offset >= len(rows):
                return

    def workspace(self, wid):
        self.server_date = self.date
        return self.fresh.get(wid, next((r for r in self.rows if r.id == wid), None))

    def stop_workspace(self, wid):
        if self.stop_error:
            raise self.stop_error
        self.stops.append(wid)
        return WorkspaceBuild.model_validate({"id": "b", "transition": "stop", "build_number": 2, "job": {"id": "j", "status": "pending"}})


class Pass:
    """One reap pass over a stub client: plan() observes and plans, apply() takes the plan's stops."""

    def __init__(self, client, dry_run=False, **env):
        self.client, self.dry_run = client, dry_run
        self.settings = ReapSettings(coder_url="http://x", coder_session_token="abcdefghij-0123456789abcdefghijkl",
                                     reap_page_size=2, **env)
        self.policy, self.log, self.counts, self.api = Policy(2 * H), Log(), {}, None
        self.listing = Listing(client, self.settings.reap_page_size)

    def plan(self, delete_orphans=False):
        p = observe_and_plan(self.listing, self.api, self.settings, self.policy, self.log, dry_run=self.dry_run,
                             delete_orphans=delete_orphans)
        self.counts = dict(p.counts)
        return p

    def stops(self):
        return [a.candidate for a in self.plan().of_type(Stop)]

    def apply(self, p):
        for key, n in apply_stops(writes(p)[0], self.client, self.policy, self.settings.reap_concurrency, self.log).items():
            self.counts[key] = self.counts.get(key, 0) + n


def reaper(client, dry_run=False, **env):
    return Pass(client, dry_run, **env)


def test_now_comes_from_the_date_header_not_the_pod_clock():
    rows = [ws("a", "w1", last_used=NOW - 3 * H, completed=NOW - 3 * H)]
    # coderd says it is 2 h earlier than NOW: then the workspace is only 1 h idle
    r = reaper(StubClient(rows, date=NOW - 2 * H))
    assert r.stops() == [] and r.listing.now == NOW - 2 * H
    r = reaper(StubClient(rows, date=NOW))
    assert [c.name for c in r.stops()] == ["w1"]


def test_stop_409_is_busy_and_not_a_failure():
    rows = [ws("a", "w1")]
    client = StubClient(rows, stop_error=CoderAPIError("POST", "/builds", 409, "A workspace build is already active."))
    r = reaper(client)
    r.apply(r.plan())
    assert r.counts["busy"] == 1 and r.counts.get("failed", 0) == 0
    assert [e["event"] for e in r.log.events if e.get("phase") == "apply"] == ["busy"]


def test_recheck_skips_workspaces_that_changed_since_the_listing():
    rows = [ws("a", "used"), ws("a", "building"), ws("a", "deleted"), ws("a", "still")]
    fresh = {rows[0].id: ws("a", "used", wid=rows[0].id, last_used=NOW - timedelta(minutes=1)),
             rows[1].id: ws("a", "building", wid=rows[1].id, job="running")}
    client = StubClient(rows, fresh=fresh)
    r = reaper(client)
    p = r.plan()
    client.rows = [rows[0], rows[1], rows[3]]  # "deleted" is gone now
    r.apply(p)
    assert client.stops == [rows[3].id]
    assert r.counts["busy"] == 1 and r.counts["skipped"] == 2


def test_other_stop_errors_count_as_failed():
    for err in (CoderAPIError("POST", "/b", 403, "You do not have permission"), CoderUnavailable("down")):
        r = reaper(StubClient([ws("a", "w")], stop_error=err))
        r.apply(r.plan())
        assert r.counts["failed"] == 1
        (e,) = [e for e in r.log.events if e["event"] == "stop-failed"]
        assert e["level"] == "warning"


def test_missing_date_header_is_an_error_not_the_pod_clock():
    client = StubClient([ws()])
    client.date = None
    with pytest.raises(JobError, match="Date"):
        reaper(client).plan()


def test_totals_need_the_unfiltered_listing():
    client = StubClient([ws()])
    reaper(client, reap_max_workspaces_per_user=3).plan()
    assert client.queries == [""]
    client = StubClient([ws()])
    reaper(client).plan()
    assert client.queries == ["status:running"]


def _api_client(kube, tmp_path):
    import os

    from jobs.reap import kube_api_client

    os.environ["KUBECONFIG"] = kube.kubeconfig(tmp_path / "kc")
    try:
        return kube_api_client()
    finally:
        del os.environ["KUBECONFIG"]


class IdClient(StubClient):
    def listed(self, q):
        if q.startswith("id:"):
            wanted = set(q[3:].split(","))
            return [r for r in self.rows if r.id in wanted]
        return self.rows


def test_kube_checks_against_the_kubernetes_api(kube, tmp_path):
    import uuid as _uuid

    from tests.test_reap import NS, credentials_secret, workspace_objects

    running, stopped = ws("a", "run"), ws("a", "off", transition="stop")
    ghost = str(_uuid.uuid4())
    for w in (running, stopped):
        workspace_objects(kube, w.id, w.name)
        credentials_secret(kube, w.id)
    workspace_objects(kube, ghost, "ghost")
    credentials_secret(kube, ghost)
    kube.put("resourcequotas", NS, {"metadata": {"name": "q"}, "spec": {"hard": {"pods": "10"}},
                                    "status": {"hard": {"pods": "10"}, "used": {"pods": "9"}}})
    api = _api_client(kube, tmp_path)
    try:
        r = reaper(IdClient([running, stopped]), reap_workspace_namespace=NS)
        r.api = api
        p = r.plan(delete_orphans=True)
        doomed = p.of_type(DeleteOrphan)
        assert sorted((o.resource, o.workspace_id) for o in doomed) == sorted(
            [(kind, wid) for kind in ("pod", "deployment", "secret") for wid in (stopped.id, ghost)])
        assert [a.details["percent"] for a in p if a.kind == "quota-usage-high"] == [90.0]
        for key, n in delete_orphans(writes(p)[1], api, NS, r.log).items():
            r.counts[key] = r.counts.get(key, 0) + n
        for kind in ("pods", "secrets"):
            assert [o["metadata"]["labels"]["com.coder.workspace.id"] for o in kube.objects(kind, NS)] == [running.id]
        assert [d["metadata"]["labels"]["com.coder.workspace.id"] for d in kube.objects("deployments", NS)] == [running.id]
        assert r.counts["deleted"] == 6 and r.counts["orphan_secrets"] == 2
        assert {(w.method, w.status) for w in kube.writes()} == {("DELETE", 200)}
        deleted = [e["target"].split("/")[0] for e in r.log.events if e["event"] == "deleted"]
        assert deleted == ["deployment", "deployment", "pod", "pod", "secret", "secret"]  # credentials last
    finally:
        api.close()


def test_secret_helpers_read_metadata_only_and_delete_with_a_uid_precondition(kube, tmp_path):
    from jobs import kube as kube_helper
    from tests.test_reap import AGENT_CANARY, GITHUB_CANARY, NS, credentials_secret

    wid = "0f0e0d0c-0b0a-4909-8807-060504030201"
    credentials_secret(kube, wid)
    kube.put("secrets", NS, {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})
    name = f"coder-{wid}-credentials"
    api = _api_client(kube, tmp_path)
    try:
        listed = list(kube_helper.list_secret_metadata(api, NS, "app.kubernetes.io/name=coder-workspace,com.coder.workspace.id",
                                                       page_size=1))
        assert [(m.name, m.labels["com.coder.workspace.id"]) for m in listed] == [(name, wid)]
        assert GITHUB_CANARY not in repr(listed) and AGENT_CANARY not in repr(listed)
        uid = kube.get_object("secrets", NS, name)["metadata"]["uid"]
        assert listed[0].uid == uid
        # A same-named successor (another uid) is never deleted.
        with pytest.raises(kube_helper.KubeConflict):
            kube_helper.delete_secret(api, NS, name, uid="00000000-0000-4000-8000-000000000000")
        assert kube.get_object("secrets", NS, name) is not None
        assert kube_helper.delete_secret(api, NS, name, uid) is True
        assert kube.get_object("secrets", NS, name) is None
        assert kube_helper.delete_secret(api, NS, name, uid) is False  # already gone
        assert kube.get_object("secrets", NS, "unrelated") is not None
    finally:
        api.close()
