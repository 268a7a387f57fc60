"""Every request the jobs send and every response the fake returns, against Coder's swagger.json.

(The autouse `coderd_conformance` fixture applies the same check to every other test; this
test drives one full lifecycle and also proves the check covers every route the jobs use.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests import swagger
from tests.conftest import run_job

pytestmark = pytest.mark.skipif(not swagger.available(), reason=swagger.SKIP_REASON)

ROUTES_THE_JOBS_USE = {
    ("GET", "/buildinfo"), ("GET", "/users/first"), ("POST", "/users/first"), ("POST", "/users/login"),
    ("POST", "/users/logout"), ("POST", "/files"), ("POST", "/organizations/{organization}/templateversions"),
    ("GET", "/templateversions/{templateversion}"), ("GET", "/templateversions/{templateversion}/logs"),
    ("POST", "/organizations/{organization}/templates"),
    ("GET", "/organizations/{organization}/templates/{templatename}"),
    ("PATCH", "/templates/{template}/versions"), ("PATCH", "/templates/{template}"),
    ("GET", "/workspaces"), ("POST", "/workspaces/{workspace}/builds"),
    ("GET", "/external-auth"), ("GET", "/organizations/{organization}"),
    ("GET", "/templateversions/{templateversion}/variables"),
}


def test_a_whole_lifecycle_conforms_to_coders_swagger(coderd, templates_env, templates):
    env = {**templates_env, "TEMPLATES_DIR": str(templates)}

    assert run_job("bootstrap-admin", env=env).rc == 0
    assert run_job("recover", env=env).rc == 0
    settings = templates / "ameide-dev" / "coder-template.yaml"
    settings.write_text(settings.read_text().replace("7200000", "5400000"))
    (templates / "ameide-dev" / "main.tf").write_text((templates / "ameide-dev" / "main.tf").read_text() + "\n# v2\n")
    assert run_job("republish-templates", env=env).rc == 0
    broken = templates / "ameide-gitops" / "main.tf"
    broken.write_text(broken.read_text() + '\noutput "x" {\n  value = var.nope\n}\n')
    assert run_job("republish-templates", env=env).rc == 1  # failed build: logs are read
    assert run_job("doctor", env=env).rc == 1  # the active versions' variables are read
    assert run_job("bootstrap-admin", env={**env, "CODER_ADMIN_PASSWORD": "Wrong-Passw0rd-but-strong!"}).rc == 1
    if hasattr(coderd, "seed_workspaces"):
        now = datetime.fromtimestamp(coderd.now(), UTC)
        coderd.seed_workspaces([
            {"owner": f"dev{i}", "name": f"ws{i}", "template": "ameide-dev", "transition": "start",
             "job_status": "succeeded", "last_used_at": now - timedelta(hours=5), "completed_at": now - timedelta(hours=6)}
            for i in range(5)])
        assert run_job("reap", env=env).rc == 0

    with coderd.lock:
        records = list(coderd.log)
    problems = [p for r in records for p in swagger.check_record(r)]
    assert problems == []
    used = {(r.method, swagger.match(r.path)) for r in records}
    expected = ROUTES_THE_JOBS_USE if hasattr(coderd, "seed_workspaces") else {
        r for r in ROUTES_THE_JOBS_USE if "workspace" not in r[1]}
    assert expected - used == set()


def test_the_check_itself_catches_a_wrong_shape():
    from fakes.base import Record

    bad = Record("POST", "/api/v2/users/first", {}, {"user-agent": "coder-jobs/0"}, b'{"email": 5}', 201,
                 {"user_id": "not-a-uuid"}, "POST /api/v2/users/first", 0.0)
    problems = swagger.check_record(bad)
    assert any("request" in p and "email" in p for p in problems)
    assert any("response" in p and "user_id" in p for p in problems)
    assert any("required" in p for p in problems)  # username and password are missing
