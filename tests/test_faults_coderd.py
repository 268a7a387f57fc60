"""Fault injection against the coderd fake: bootstrap-admin, republish-templates, recover, reap.

Every test runs the real CLI in a subprocess and asserts on the fake's state afterwards:
no duplicate template, no two versions with the same content attached to a template, one
first user, and for the reaper: only idle workspaces stopped, none stopped twice.

Decisions under 30% random 5xx (statuses 500/502/503/504, fixed seed):
- bootstrap-admin, republish-templates, recover CONVERGE (exit 0). Reads are retried by the
  client (502/503/504); a 500, or a 5xx on a write, makes the job read the state again and
  re-plan (jobs.retry.replan), which is safe because every step is idempotent by
  construction (POST /users/first answers 409 on a repeat, version names are deterministic
  and coderd 409s a second one, a template create 409s). A job that gives up on a flaky
  coderd would leave a database reset unhealed, so these must converge.
- reap exits 0 or 1, never anything else, and is judged by its invariants: a stop build is a
  non-idempotent POST (a repeat would queue a second build), so a failed stop is reported and
  not repeated, and a failed listing ends the pass. The reaper runs every few minutes; the next
  pass (asserted here, without faults) stops what this one could not, each workspace once.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import coder_writes, run_job
from tests.test_faults_common import (  # noqa: F401  (fixtures)
    BUILDS_POST,
    CODER_JOBS,
    TEMPLATES,
    VERSIONS_POST,
    assert_clean_failure,
    assert_converged,
    assert_first_user_once,
    assert_no_duplicates,
    assert_no_traceback,
    assert_reap_safe,
    assert_templates_converged,
    down_at_start,
    env,
    gaps_after_429,
    prepare,
    reap_env,
    reap_scenario,
    record_hook,
    start_job,
    stop_builds,
    template_state,
    terminate,
    wait_until,
    with_admin,
)


@pytest.fixture
def job_envs(env, reap_env):
    return {"reap": reap_env, "bootstrap-admin": env, "republish-templates": env, "recover": env}


def run_and_check(job, coderd, job_envs, extra=None, *, timeout=120):
    """Prepare coderd for `job` (seed workspaces for reap), run it, return (result, reap ids or None)."""
    prepare(job, coderd)
    seeded = reap_scenario(coderd) if job == "reap" else None
    result = run_job(job, env={**job_envs[job], **(extra or {})}, timeout=timeout)
    return result, seeded


def assert_job_converged(job, coderd, result, seeded):
    assert result.rc == 0, result.output
    assert_no_traceback(result)
    if job == "reap":
        names, idle = seeded
        stops = assert_reap_safe(coderd, names, idle)
        assert set(stops) == idle
    else:
        assert_converged(job, coderd)


# ---------------------------------------------------------------------------- coderd down at start


@pytest.mark.parametrize("job", CODER_JOBS)
def test_job_waits_for_a_coderd_that_refuses_then_answers_503_for_less_than_the_deadline(coderd, job_envs, job):
    prepare(job, coderd)
    down_at_start(coderd, refuse=1, unavailable=1)

    result, seeded = run_and_check(job, coderd, job_envs, {"CODER_READY_TIMEOUT": "6"})

    assert_job_converged(job, coderd, result, seeded)
    assert result.find("coderd is ready")


@pytest.mark.parametrize("mode", ["refuse", "503"])
@pytest.mark.parametrize("job", CODER_JOBS)
def test_job_gives_up_on_a_coderd_down_longer_than_the_deadline_naming_url_and_deadline(coderd, job_envs, job, mode):
    prepare(job, coderd)
    seeded = reap_scenario(coderd) if job == "reap" else None
    coderd.unavailable_for(60, mode=mode)  # longer than any deadline: the job's own deadline decides

    result = run_job(job, env={**job_envs[job], "CODER_READY_TIMEOUT": "2"})

    message = assert_clean_failure(result, coderd.url, "2s", "CODER_READY_TIMEOUT")
    assert ("HTTP 503" if mode == "503" else "connection refused") in message and "RUNBOOK.md section 10" in message
    assert coder_writes(coderd) == []
    if seeded:
        assert stop_builds(coderd) == {}


# ---------------------------------------------------------------------------- 30% random 5xx


@pytest.mark.parametrize("job,seed", [("bootstrap-admin", 3), ("bootstrap-admin", 7), ("republish-templates", 2),
                                      ("recover", 0), ("recover", 11)])
def test_job_converges_through_30_percent_5xx_without_duplicates(coderd, job_envs, job, seed):
    prepare(job, coderd)
    coderd.random_errors(0.3, seed=seed)

    result, seeded = run_and_check(job, coderd, job_envs, {"CODER_READY_TIMEOUT": "60"}, timeout=180)

    coderd.clear_faults()
    assert any(r.route == "fault" for r in coderd.log), "the seed injected no fault"
    assert_job_converged(job, coderd, result, seeded)


def test_recover_converges_through_30_percent_5xx_without_orphan_versions(coderd, env):
    coderd.random_errors(0.3, seed=8)

    result = run_job("recover", env={**env, "CODER_READY_TIMEOUT": "60"}, timeout=180)

    coderd.clear_faults()
    assert result.rc == 0, result.output
    assert_templates_converged(coderd)
    assert len(coderd.versions) == 2, [v["name"] for v in coderd.versions.values()]


def test_a_5xx_while_polling_a_build_does_not_build_the_same_version_again(coderd, env):
    """Regression: a failed poll used to drop the version it waited on, so the re-plan built another
    (an orphan for a new template). Only the build's own failure may forget it."""
    coderd.random_errors(0.5, seed=1, statuses=(500,))
    coderd.faults.only_paths = r"^/api/v2/templateversions/[^/]+$"

    result = run_job("recover", env={**env, "CODER_READY_TIMEOUT": "60"}, timeout=180)

    coderd.clear_faults()
    assert result.rc == 0, result.output
    assert result.find("transient error, reading state again")
    assert_templates_converged(coderd)
    assert len(coderd.versions) == 2, [v["name"] for v in coderd.versions.values()]
    assert len(coderd.requests("POST", VERSIONS_POST)) == 2


@pytest.mark.parametrize("seed", [1, 4])
def test_reap_through_30_percent_5xx_never_stops_a_busy_workspace_nor_one_twice(coderd, reap_env, seed):
    with_admin(coderd)
    names, idle = reap_scenario(coderd)
    coderd.random_errors(0.3, seed=seed)

    result = run_job("reap", env={**reap_env, "CODER_READY_TIMEOUT": "10"})

    coderd.clear_faults()
    assert result.rc in (0, 1), result.output
    assert_no_traceback(result)
    if result.rc == 1:
        assert result.errors()
    assert_reap_safe(coderd, names, idle)
    coderd.wait_idle()

    again = run_job("reap", env=reap_env)  # the next pass finishes the job

    assert again.rc == 0, again.output
    assert set(assert_reap_safe(coderd, names, idle)) == idle


# ---------------------------------------------------------------------------- latency


@pytest.mark.parametrize("job", CODER_JOBS)
def test_job_converges_with_200ms_latency_on_every_request_and_no_retry(coderd, job_envs, job):
    prepare(job, coderd)
    coderd.faults.latency = 0.2

    result, seeded = run_and_check(job, coderd, {**job_envs, "reap": {**job_envs["reap"], "REAP_PAGE_SIZE": "500"}})

    coderd.clear_faults()
    assert_job_converged(job, coderd, result, seeded)
    assert not result.find("retrying") and not result.find("transient error")


# ---------------------------------------------------------------------------- connection reset


# (job, path the reset hits, expected exit code): resets on reads and on writes that are safe to
# repeat are retried; a reset on a write that may have been applied ends the run with exit 1.
RESETS = [
    pytest.param("bootstrap-admin", r"^/api/v2/users/first$", 0, id="bootstrap-admin-users-first"),  # a repeat answers 409
    pytest.param("republish-templates", r"^/api/v2/organizations/[^/]+/templates/[^/]+$", 0, id="republish-get-template"),
    pytest.param("republish-templates", VERSIONS_POST, 1, id="republish-post-templateversion"),
    pytest.param("recover", r"^/api/v2/files$", 0, id="recover-upload"),  # uploads are deduplicated by coderd
    pytest.param("recover", r"^/api/v2/organizations/[^/]+/templates$", 1, id="recover-post-template"),
    pytest.param("reap", r"^/api/v2/workspaces$", 0, id="reap-list-page"),
    pytest.param("reap", BUILDS_POST, 1, id="reap-stop-build"),
]


@pytest.mark.parametrize("job,path,rc", RESETS)
def test_connection_reset_mid_request_is_retried_when_safe_else_exit_1_and_the_next_run_converges(
        coderd, job_envs, job, path, rc):
    prepare(job, coderd)
    coderd.faults.only_paths = path
    coderd.faults.reset_next = 1

    result, seeded = run_and_check(job, coderd, job_envs)

    assert coderd.faults.reset_next == 0, "the reset was never triggered"
    coderd.clear_faults()
    if rc == 0:
        assert_job_converged(job, coderd, result, seeded)
        return
    if job == "reap":
        assert_clean_failure(result, "some actions failed")
        names, idle = seeded
        stops = assert_reap_safe(coderd, names, idle)
        assert len(stops) == len(idle) - 1  # every stop but the one whose connection dropped
        assert len([e for e in result.events if e["event"] == "stop-failed"]) == 1
    else:
        assert_clean_failure(result, "connection failed mid-request", "not repeated")
        assert_no_duplicates(coderd)
    coderd.wait_idle()

    again = run_job(job, env=job_envs[job])

    assert_job_converged(job, coderd, again, seeded)


# ---------------------------------------------------------------------------- 429


RATE_LIMITED = [
    ("bootstrap-admin", r"^/api/v2/users/first$"),  # GET then POST: both limited once
    ("republish-templates", r"^/api/v2/files$"),
    ("recover", VERSIONS_POST),  # a write that is not otherwise repeated
    ("reap", BUILDS_POST),
]


@pytest.mark.parametrize("job,path", RATE_LIMITED, ids=[j for j, _ in RATE_LIMITED])
def test_job_waits_at_least_retry_after_on_429_then_converges(coderd, job_envs, job, path):
    prepare(job, coderd)
    coderd.faults.only_paths = path
    coderd.faults.rate_limited = 2
    coderd.faults.retry_after = 2

    result, seeded = run_and_check(job, coderd, job_envs)

    coderd.clear_faults()
    assert_job_converged(job, coderd, result, seeded)
    gaps = gaps_after_429(coderd)
    assert len(gaps) == 2
    assert min(gaps) >= 2.0, gaps  # Retry-After: 2, measured on the fake's own clock


# ---------------------------------------------------------------------------- database reset mid-run


@pytest.mark.parametrize("nth", [1, 2])
def test_a_database_reset_during_republish_ends_cleanly_and_the_next_recover_heals_it(coderd, env, nth):
    with_admin(coderd)
    posts = []

    def reset_after_version_post(fake, record):
        if fake is coderd and record.method == "POST" and record.path.endswith("/templateversions") and record.status == 201:
            posts.append(record)
            if len(posts) == nth:
                fake.reset_database()  # the answer (201) still goes out, about a version that no longer exists

    with record_hook(reset_after_version_post):
        result = run_job("republish-templates", env=env)

    assert len(posts) >= nth
    assert_no_traceback(result)
    assert result.rc in (0, 1), result.output
    if result.rc == 1:
        message = assert_clean_failure(result, coderd.url)
        assert "database" in message and "recover" in message
    assert_no_duplicates(coderd)

    healed = run_job("recover", env=env)

    assert healed.rc == 0, healed.output
    assert_first_user_once(coderd)
    assert_templates_converged(coderd)


# ---------------------------------------------------------------------------- SIGTERM mid-apply


def test_recover_killed_by_sigterm_while_a_version_builds_exits_1_promptly_and_the_next_run_converges(coderd, env):
    coderd.provisioner_delay = 3.0
    proc = start_job("recover", env=env)
    wait_until(lambda: coderd.requests("POST", VERSIONS_POST), what="POST /templateversions")

    result, _ = terminate(proc)  # raises if the job outlives SIGTERM

    assert_clean_failure(result, "SIGTERM")
    assert not coderd.templates  # killed before the template was created
    coderd.provisioner_delay = 0.05

    again = run_job("recover", env=env)

    assert again.rc == 0, again.output
    assert_templates_converged(coderd)
    # The killed run's version stays behind, attached to no template: coderd has no API that lists
    # versions without a template, so nothing can find it to clean up. It is inert.
    assert len(coderd.versions) == 3
    assert len([v for v in coderd.versions.values() if v.get("template_id") is None]) == 1


def test_republish_killed_by_sigterm_while_a_new_version_builds_reuses_it_on_the_next_run(coderd, env, templates):
    assert run_job("recover", env=env).rc == 0
    main_tf = templates / "ameide-dev" / "main.tf"
    main_tf.write_text(main_tf.read_text() + "\n# edited\n")
    coderd.clear_log()
    coderd.provisioner_delay = 3.0
    proc = start_job("republish-templates", env=env)
    wait_until(lambda: coderd.requests("POST", VERSIONS_POST), what="POST /templateversions")

    result, _ = terminate(proc)  # raises if the job outlives SIGTERM

    assert_clean_failure(result, "SIGTERM")
    coderd.provisioner_delay = 0.05

    again = run_job("republish-templates", env=env)

    assert again.rc == 0, again.output
    assert again.find("reusing the version already built for this content")
    now = assert_no_duplicates(coderd)
    assert len(now["ameide-dev"]["versions"]) == 2  # the first publish and the edit, once
    assert now["ameide-dev"]["active"]["id"] == coderd.requests("POST", VERSIONS_POST)[0].response["id"]
    assert len(now["ameide-gitops"]["versions"]) == 1


def test_bootstrap_admin_killed_by_sigterm_while_the_first_user_is_created_exits_1_and_the_next_run_verifies(
        coderd, env):
    killed = threading.Event()

    def slow_first_user(fake, record):  # the user is created; its answer is held back until the job is gone
        if fake is coderd and record.method == "POST" and record.path == "/api/v2/users/first":
            killed.wait(5)

    with record_hook(slow_first_user):
        proc = start_job("bootstrap-admin", env=env)
        wait_until(lambda: coderd.requests("POST", r"^/api/v2/users/first$"), what="POST /users/first")
        result, _ = terminate(proc)  # raises if the job outlives SIGTERM
        killed.set()

    assert_clean_failure(result, "SIGTERM")

    again = run_job("bootstrap-admin", env=env)

    assert again.rc == 0, again.output
    assert again.find("configured credentials log in")
    assert_first_user_once(coderd)


def test_reap_killed_by_sigterm_during_its_stops_issues_no_queued_stop_and_the_next_run_finishes(coderd, reap_env):
    with_admin(coderd)
    names, idle = reap_scenario(coderd)

    def slow_stop(fake, record):
        if fake is coderd and record.method == "POST" and record.path.endswith("/builds"):
            time.sleep(1)

    with record_hook(slow_stop):
        proc = start_job("reap", env=reap_env)
        wait_until(lambda: coderd.requests("POST", BUILDS_POST), what="the first stop build")
        result, _ = terminate(proc)  # raises if the job outlives SIGTERM

    assert_clean_failure(result, "SIGTERM")
    stops = assert_reap_safe(coderd, names, idle)
    assert len(stops) <= 1 + 4, "stops queued behind REAP_CONCURRENCY=4 were still issued after SIGTERM"
    assert len(stops) < len(idle)
    coderd.wait_idle()

    again = run_job("reap", env=reap_env)

    assert again.rc == 0, again.output
    assert set(assert_reap_safe(coderd, names, idle)) == idle
