"""The README's demo command keeps working, and reads in a minute: the whole lifecycle against
the fakes, exit 0, under 60 lines none wider than 160, closing with a summary table. On a fresh
clone it says what is missing before doing anything, and the Coder steps do not wait for the
Kubernetes build."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

# The Coder-only steps first (they run while the kube-apiserver builds), the one needing Kubernetes last.
STEPS = ("1. First sync", "2. Re-sync with nothing changed", "3. A template edit", "4. Database reset",
         "5. Reaper pass", "6. PreSync: sync-external-auth")
JOBS_RUN = ["bootstrap-admin", "republish-templates", "recover", "republish-templates", "doctor", "recover",
            "reap"] + ["sync-external-auth"] * 3


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-logs")


@pytest.fixture(scope="module")
def demo(logs):
    proc = subprocess.run([sys.executable, "-m", "demo", "--logs", str(logs)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.no_conformance  # the demo's fakes live in its own process; this checks its outcome
def test_the_demo_runs_the_whole_lifecycle_coder_steps_first_and_the_kubernetes_step_last(demo):
    banners = [line for line in demo.stdout.splitlines() if line.startswith("== ") and "Summary" not in line]
    assert [b for b in banners if not any(step in b for step in STEPS)] == []
    assert [next(i for i, step in enumerate(STEPS) if step in b) for b in banners] == list(range(len(STEPS)))
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
    reap = rows[JOBS_RUN.index("reap")].split()
    assert reap[3:7] == ["40", "5", "27", "0"]  # checked, changed (stopped), deferred, failed
    assert [row.split()[-1] for row in rows[-3:]] == ["4", "0", "4"]  # sync-external-auth's re-run writes nothing


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
    assert sorted(p.name for p in logs.glob("*.log"))[-1] == "10-sync-external-auth.log"
    reap_json = (logs / "07-reap.jsonl").read_text().splitlines()
    assert sum('"event": "deferred"' in line for line in reap_json) == 27
    assert "summary" in (logs / "07-reap.log").read_text()


def demo_with_path(tmp_path, *tools: str) -> subprocess.CompletedProcess:
    """The demo with a PATH holding only these tools (the real ones, linked)."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return subprocess.run([sys.executable, "-m", "demo"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)})


def test_without_go_and_openssl_the_demo_stops_before_anything_else_with_one_message_naming_both(tmp_path):
    proc = demo_with_path(tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no coderd started, no step run, no build begun
    assert "Traceback" not in proc.stderr
    first, *hints = proc.stderr.splitlines()
    assert first == "./dev demo needs go and openssl on PATH; missing: go, openssl"
    assert hints[0].startswith("  - go: Go 1.24 or newer") and "https://go.dev/doc/install" in hints[0]
    assert hints[1].startswith("  - openssl:") and "apt-get install openssl" in hints[1]


def test_with_openssl_but_no_go_only_go_is_named(tmp_path):
    proc = demo_with_path(tmp_path, "openssl")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[0].endswith("missing: go") and "openssl:" not in proc.stderr


class StillBuilding:
    """A build future that is done after `polls` waits; each wait stands for `every_s` seconds."""

    def __init__(self, polls: int) -> None:
        self.polls, self.waited = polls, []

    def result(self, timeout: float) -> None:
        self.waited.append(timeout)
        if len(self.waited) <= self.polls:
            raise TimeoutError


def test_while_the_build_runs_a_line_says_it_is_still_building_and_for_how_long():
    from demo.lifecycle import PROGRESS_EVERY_S, KubeBuild

    future = StillBuilding(polls=3)
    clock = iter([15.0, 30.0, 45.0])
    said: list[str] = []
    KubeBuild(future, cold=True, started=0.0).wait(said.append, clock=lambda: next(clock))  # type: ignore[arg-type]
    assert future.waited == [PROGRESS_EVERY_S] * 4 and PROGRESS_EVERY_S == 15
    assert [line.split(": ")[1].split(" so far")[0] for line in said] == ["15s", "30s", "45s"]
    assert all("still building the real kube-apiserver" in line for line in said)


def test_a_failed_build_wait_raises_what_the_build_raised():
    from concurrent.futures import Future

    from demo.lifecycle import KubeBuild

    future: Future = Future()
    future.set_exception(RuntimeError("building k8s failed: no space left"))
    with pytest.raises(RuntimeError, match="no space left"):
        KubeBuild(future, cold=True).wait(print)


@pytest.mark.no_conformance
def test_the_coder_steps_run_while_the_kubernetes_build_is_still_going(monkeypatch, tmp_path, capsys):
    """A build that has not finished when steps 1-5 are done: they ran anyway, then the demo waits."""
    from concurrent.futures import Future

    import demo.lifecycle as demo_module

    future: Future = Future()  # never done on its own
    seen_before_done: list[str] = []

    class HeldBuild(demo_module.KubeBuild):
        def wait(self, say, every_s=demo_module.PROGRESS_EVERY_S, clock=None):
            assert not self.future.done()
            seen_before_done.append(capsys.readouterr().out)
            self.future.set_result(None)

    monkeypatch.setattr(demo_module, "external_auth_step", lambda demo, workdir, step: None)
    rc = demo_module._demo(["--logs", str(tmp_path)], HeldBuild(future, cold=True))
    out = seen_before_done[0]
    assert rc == 0
    assert "building in the background" in out
    assert all(f"== {n}." in out for n in range(1, 6)) and "== 6." not in out
    assert out.count("$ coder-jobs ") == 7
