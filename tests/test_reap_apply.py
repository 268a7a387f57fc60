"""The reaper's apply step against a stub client: 409 busy, re-check, failures, Date header as now;
its Kubernetes checks against the real API server."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime

import pytest

from jobs.context import RunContext
from jobs.errors import CoderAPIError, CoderUnavailable, JobError
from jobs.models import WorkspaceBuild
from jobs.reap import Reaper
from jobs.reap_rules import Policy
from jobs.settings import ReapSettings
from tests.test_reap_plan import NOW, H, ws


class Log:
    def __init__(self):
        self.events = []

    def __getattr__(self, level):
        return lambda event, **kw: self.events.append({"level": level, "event": event, **kw})


class Resp:
    def __init__(self, status, body, date=NOW):
        self.status_code, self._body = status, body
        self.headers = {"Date": format_datetime(date, usegmt=True)}

    def json(self):
        return self._body


class StubClient:
    def __init__(self, rows, *, fresh=None, stop_error=None, date=NOW):
        self.rows, self.fresh, self.stop_error, self.date = rows, fresh or {}, stop_error, date
        self.server_date = None
        self.stops, self.queries = [], []

    def workspaces_page(self, q, limit, offset):
        self.queries.append(q)
        self.server_date = self.date
        return self.rows[offset:offset + limit], len(self.rows)

    def request(self, method, path, ok=()):
        wid = path.rsplit("/", 1)[1]
        w = self.fresh.get(wid, next((r for r in self.rows if r.id == wid), None))
        if w is None:
            return Resp(410, {"message": "gone"}, self.date)
        return Resp(200, w.model_dump(mode="json"), self.date)

    def stop_workspace(self, wid):
        if self.stop_error:
            raise self.stop_error
        self.stops.append(wid)
        return WorkspaceBuild.model_validate({"id": "b", "transition": "stop", "build_number": 2, "job": {"id": "j", "status": "pending"}})


def reaper(client, dry_run=False, **env):
    settings = ReapSettings(coder_url="http://x", coder_session_token="abcdefghij-0123456789abcdefghijkl", reap_page_size=2, **env)
    return Reaper(client, settings, Policy(2 * H), RunContext(dry_run=dry_run, log=Log()))


def test_now_comes_from_the_date_header_not_the_pod_clock():
    rows = [ws("a", "w1", last_used=NOW - 3 * H, completed=NOW - 3 * H)]
    # coderd says it is 2 h earlier than NOW: then the workspace is only 1 h idle
    r = reaper(StubClient(rows, date=NOW - 2 * H))
    idle, quota = r.plan()
    assert idle == [] and r.now == NOW - 2 * H
    r = reaper(StubClient(rows, date=NOW))
    assert [c.name for c in r.plan()[0]] == ["w1"]


def test_stop_409_is_busy_and_not_a_failure():
    rows = [ws("a", "w1")]
    client = StubClient(rows, stop_error=CoderAPIError("POST", "/builds", 409, "A workspace build is already active."))
    r = reaper(client)
    r.apply_stops([(c, "idle") for c in r.plan()[0]])
    assert r.counts["busy"] == 1 and r.counts.get("failed", 0) == 0
    assert [e["event"] for e in r.ctx.log.events if e.get("phase") == "apply"] == ["busy"]


def test_recheck_skips_workspaces_that_changed_since_the_listing():
    rows = [ws("a", "used"), ws("a", "building"), ws("a", "deleted"), ws("a", "still")]
    fresh = {rows[0].id: ws("a", "used", wid=rows[0].id, last_used=NOW - timedelta(minutes=1)),
             rows[1].id: ws("a", "building", wid=rows[1].id, job="running")}
    client = StubClient(rows, fresh=fresh)
    r = reaper(client)
    idle, _ = r.plan()
    client.rows = [rows[0], rows[1], rows[3]]  # "deleted" is gone now
    r.apply_stops([(c, "idle") for c in idle])
    assert client.stops == [rows[3].id]
    assert r.counts["busy"] == 1 and r.counts["changed"] == 2


def test_other_stop_errors_count_as_failed():
    for err in (CoderAPIError("POST", "/b", 403, "You do not have permission"), CoderUnavailable("down")):
        r = reaper(StubClient([ws("a", "w")], stop_error=err))
        r.apply_stops([(c, "idle") for c in r.plan()[0]])
        assert r.counts["failed"] == 1
        (e,) = [e for e in r.ctx.log.events if e["event"] == "stop-failed"]
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
    def workspaces_page(self, q, limit, offset):
        rows = self.rows
        if q.startswith("id:"):
            wanted = set(q[3:].split(","))
            rows = [r for r in rows if r.id in wanted]
        self.queries.append(q)
        self.server_date = self.date
        return rows[offset:offset + limit], len(rows)


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
        r.kube = api
        doomed = r.kube_checks()
        assert sorted((k, wid) for k, _n, _u, wid in doomed) == sorted(
            [(kind, wid) for kind in ("pod", "deployment", "secret") for wid in (stopped.id, ghost)])
        assert [e["percent"] for e in r.ctx.log.events if e["event"] == "quota-usage-high"] == [90.0]
        r.delete_orphans(doomed)
        for kind in ("pods", "secrets"):
            assert [o["metadata"]["labels"]["com.coder.workspace.id"] for o in kube.objects(kind, NS)] == [running.id]
        assert [d["metadata"]["labels"]["com.coder.workspace.id"] for d in kube.objects("deployments", NS)] == [running.id]
        assert r.counts["deleted"] == 6 and r.counts["orphan_secrets"] == 2
        assert {(w.method, w.status) for w in kube.writes()} == {("DELETE", 200)}
        deleted = [e["target"].split("/")[0] for e in r.ctx.log.events if e["event"] == "deleted"]
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
