"""The README's demo command keeps working, and reads in a minute: the whole lifecycle against
the fakes, exit 0, under 60 lines none wider than 160, closing with a summary table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

STEPS = ("PreSync: sync-external-auth", "First sync", "nothing changed", "A template edit", "Database reset",
         "Reaper pass")
JOBS_RUN = ["sync-external-auth"] * 3 + ["bootstrap-admin", "republish-templates", "recover", "republish-templates",
                                        "doctor", "recover", "reap"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-logs")


@pytest.fixture(scope="module")
def demo(logs):
    proc = subprocess.run([sys.executable, "-m", "fakes.demo", "--logs", str(logs)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.no_conformance  # the demo's fakes live in its own process; this checks its outcome
def test_the_demo_runs_the_whole_lifecycle(demo):
    for step in STEPS:
        assert step in demo.stdout
    assert "Traceback" not in demo.stdout + demo.stderr
    assert demo.stderr == ""  # the jobs' warnings are shown in place, not lost on stderr


@pytest.mark.no_conformance
def test_the_demo_fits_a_screen_or_two(demo):
    lines = demo.stdout.splitlines()
    assert len(lines) < 60, len(lines)
    assert max(len(line) for line in lines) <= 160, max(lines, key=len)


@pytest.mark.no_conformance
def test_the_demo_ends_with_a_summary_table_of_every_run(demo):
    lines = demo.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("== Summary:"))
    assert "10 runs, every exit code as expected" in lines[title]
    head, *rows = lines[title + 1:]
    assert head.split()[:7] == ["step", "job", "exit", "checked", "changed", "deferred", "failed"]
    assert [row.split()[1] for row in rows] == JOBS_RUN
    doctor = rows[JOBS_RUN.index("doctor")]
    assert doctor.split()[2:4] == ["1", "(expected)"]
    reap = rows[-1].split()
    assert reap[3:7] == ["40", "5", "27", "0"]  # checked, changed (stopped), deferred, failed
    assert [row.split()[-1] for row in rows[:3]] == ["4", "0", "4"]  # sync-external-auth's re-run writes nothing


@pytest.mark.no_conformance
def test_the_expected_doctor_failure_is_labelled_and_the_reaper_banner_matches_its_output(demo):
    assert "$ coder-jobs doctor -> exit 1 (expected: drift" in demo.stdout
    oldest = re.search(r"idle (\S+) to (\S+);", demo.stdout).group(2)
    stops = re.findall(r"stop workspace/\S+ .* idle=(\S+) ", demo.stdout)
    assert len(stops) == 5 and stops[0] == oldest
    assert "deferred ×27" in demo.stdout and demo.stdout.count("deferred") == 2  # the count line, and the table's heading


@pytest.mark.no_conformance
def test_every_runs_whole_log_is_kept_with_each_deferred_workspace_in_the_json(demo, logs):
    assert str(logs) in demo.stdout.splitlines()[-12]
    assert sorted(p.name for p in logs.glob("*.log"))[-1] == "10-reap.log"
    reap_json = (logs / "10-reap.jsonl").read_text().splitlines()
    assert sum('"event": "deferred"' in line for line in reap_json) == 27
    assert "summary" in (logs / "10-reap.log").read_text()
