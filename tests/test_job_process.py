"""The tests run each job forked from a zygote that has imported the libraries (tests/job_process.py).
These pin that such a job is the same as `python -m jobs` started the plain way: same output, same
exit status, its own process, environment and working directory, and no `jobs` code imported
before it starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from tests.conftest import REPO, job_env
from tests.job_process import PRELOAD, launcher


def plain(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "jobs", *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def without_timestamps(text: str) -> list[dict]:
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    for event in events:
        event.pop("timestamp", None)
    return events


def test_help_is_the_same_byte_for_byte():
    env = job_env()
    assert launcher().run(["--help"], env, timeout=60) == plain("--help", env=env)


def test_a_settings_error_is_the_same_exit_code_and_the_same_events_on_the_same_streams():
    env = job_env({"CODER_URL": "not-a-url", "REAP_IDLE_AFTER": "2"})
    rc, out, err = launcher().run(["--log-format", "json", "reap"], env, timeout=60)
    plain_rc, plain_out, plain_err = plain("--log-format", "json", "reap", env=env)
    assert rc == plain_rc == 2
    assert without_timestamps(out) == without_timestamps(plain_out)
    assert without_timestamps(err) == without_timestamps(plain_err)


def test_an_unknown_job_is_argparses_exit_2_on_stderr_as_in_a_plain_process():
    env = job_env()
    assert launcher().run(["no-such-job"], env, timeout=60) == plain("no-such-job", env=env)


def test_each_job_is_its_own_process_with_exactly_the_environment_and_directory_it_was_given(tmp_path):
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    # Only what is given: PYTHONPATH finds the repo from another directory, a relative rules file
    # must resolve against that directory, and nothing of the test's own environment leaks in.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "CODER_URL": "http://127.0.0.1:9",
           "CODER_SESSION_TOKEN": "abcdefghij-abcdefghijabcdefghijabcdef", "CODER_READY_TIMEOUT": "0.5",
           "REAP_RULES_FILE": "rules.yaml"}
    first = launcher().start(["--log-format", "json", "reap"], env, cwd=tmp_path)
    second = launcher().start(["--log-format", "json", "reap"], {**env, "REAP_MAX_STOPS": "7"}, cwd=tmp_path)
    assert len({first.pid, second.pid, os.getpid()}) == 3
    (out1, err1), (out2, err2) = first.communicate(60), second.communicate(60)
    assert first.returncode == second.returncode == 1, err1 + err2  # the rules file loaded; coderd is unreachable
    settings1, settings2 = (next(e for e in without_timestamps(out) if e["event"] == "settings") for out in (out1, out2))
    assert settings1["REAP_RULES_FILE"] == "rules.yaml" and settings1["REAP_MAX_STOPS"] == 20
    assert settings2["REAP_MAX_STOPS"] == 7
    assert "connection refused" in err1


def test_sigterm_reaches_the_job_and_its_exit_status_is_reported_like_popen():
    # A "coderd" that accepts the connection and never answers: once the job has connected, it is
    # past start-up (its SIGTERM handler is installed) and waiting.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.settimeout(60)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = job_env({"CODER_URL": url, "CODER_SESSION_TOKEN": "abcdefghij-abcdefghijabcdefghijabcdef",
                       "CODER_READY_TIMEOUT": "600", "CODER_REQUEST_TIMEOUT": "600"})
        proc = launcher().start(["--log-format", "json", "reap"], env)
        conn, _ = silent.accept()
        with conn:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(60)
    assert proc.returncode == 1
    assert "SIGTERM" in err


def test_the_zygote_imports_libraries_only_never_the_jobs_package():
    assert not any(name == "jobs" or name.startswith(("jobs.", "tests", "fakes")) for name in PRELOAD)
