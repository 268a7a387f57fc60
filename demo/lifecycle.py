"""The whole coder-jobs lifecycle on a laptop, against what the tests use: the coderd fake and
a real kube-apiserver + etcd (built from `tests/kube/` on first use, cached in `.cache/kube/`).

    ./dev demo [--logs DIR]

It needs `go` (the first run builds the kube-apiserver) and `openssl` (its certificates), and says
so before anything else when either is missing. Steps 1-5 talk to the coderd fake only and run
while the kube-apiserver builds in the background (a cold build takes minutes; a line every 15 s
says it is still going once they are done); step 6, sync-external-auth, the PreSync hook that
needs Kubernetes, comes last.

Each step runs the real `coder-jobs` CLI in its own process (as a Kubernetes Job would), with
JSON logs. Under each command the demo prints, as the console format renders them, the run's
plan (one line per action) and its warnings; every run's whole log (JSON and console) stays in
a folder named at the start. A closing table gives every run's exit code, its summary counts
and what the API server saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from demo.console import render_console
from fakes.coderd import FakeCoderd
from jobs.log import human_seconds

REPO = Path(__file__).resolve().parent.parent
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
WIDTH = 156  # console lines are indented by 2; no line of the demo passes 160 characters
SESSION_PATHS = ("/api/v2/users/login", "/api/v2/users/logout")  # a login proves credentials; not a change
PROGRESS_EVERY_S = 15.0  # a cold Go build runs for minutes: say it is alive this often

# What the Kubernetes step needs on PATH, and how to get it. Checked first: without them the demo
# used to fail with a traceback only after the slow parts had run.
PREREQUISITES = {
    "go": "Go 1.24 or newer builds the real kube-apiserver and etcd on the first run: https://go.dev/doc/install "
          "(or the distribution's package where it is 1.24+, e.g. `apt-get install golang-go`)",
    "openssl": "openssl makes the kube-apiserver's certificates: `apt-get install openssl` (Debian/Ubuntu), "
               "`dnf install openssl` (Fedora), `brew install openssl` (macOS)",
}


def missing_prerequisites(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """One message naming every missing tool and how to install it, or None."""
    missing = [tool for tool in PREREQUISITES if which(tool) is None]
    if not missing:
        return None
    return (f"./dev demo needs {' and '.join(PREREQUISITES)} on PATH; missing: {', '.join(missing)}\n"
            + "".join(f"  - {tool}: {PREREQUISITES[tool]}\n" for tool in missing))


@dataclass
class Run:
    step: int
    job: str
    exit: int
    expected: int
    summary: dict[str, Any]
    requests: int = 0
    writes: int = 0


class Demo:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.runs: list[Run] = []
        self.problems: list[str] = []  # a step that could not run at all (the Kubernetes build failed)

    def banner(self, n: int, title: str, why: str) -> None:
        print(f"{BOLD}== {n}. {title}{RESET} {DIM}- {why}{RESET}", flush=True)

    def run(self, step: int, args: list[str], env: dict[str, str], expected: int = 0, why: str = "") -> Run:
        proc = subprocess.run([sys.executable, "-m", "jobs", "--log-format", "json", *args],
                              env={**os.environ, **env}, cwd=REPO, capture_output=True, text=True)
        events = _events(proc.stdout, proc.stderr)
        name = f"{len(self.runs) + 1:02d}-{args[-1]}"
        (self.logs / f"{name}.jsonl").write_text(proc.stdout + proc.stderr)
        (self.logs / f"{name}.log").write_text("\n".join(render_console(events)) + "\n")
        label = f"exit {proc.returncode}" + (f" (expected: {why})" if why and proc.returncode == expected else "")
        if proc.returncode != expected:
            label += f" (UNEXPECTED, wanted {expected}; log: {self.logs / name}.log)"
        print(f"$ coder-jobs {' '.join(args)} {DIM}->{RESET} {label}", flush=True)
        for line in render_console(_shown(events), width=WIDTH, times=False):
            print(f"  {line}", flush=True)
        run = Run(step, args[-1], proc.returncode, expected,
                  next((e for e in reversed(events) if e.get("event") == "summary"), {}))
        self.runs.append(run)
        return run

    def table(self) -> int:
        bad = [r for r in self.runs if r.exit != r.expected]
        verdict = "every exit code as expected" if not bad else f"{len(bad)} UNEXPECTED exit code(s)"
        verdict += "".join(f"; {problem}" for problem in self.problems)
        print(f"{BOLD}== Summary: {len(self.runs)} runs, {verdict}{RESET} {DIM}(full logs: {self.logs}){RESET}")
        heads = ["step", "job", "exit", "checked", "changed", "deferred", "failed", "API requests", "API writes"]
        rows = [[str(r.step), r.job, f"{r.exit}" + (" (expected)" if r.expected and r.exit == r.expected else ""),
                 *(str(r.summary.get(k, "-")) for k in ("checked", "changed", "deferred", "failed")),
                 str(r.requests), str(r.writes)] for r in self.runs]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
        left = {0, 1, 2}
        for row in [heads, *rows]:
            print("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        return 1 if bad or self.problems else 0


def _events(*streams: str) -> list[dict[str, Any]]:
    """The JSON events of stdout (info) and stderr (warnings, errors), in the order they were logged."""
    events = []
    for text in streams:
        for line in text.splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    return sorted(events, key=lambda e: str(e.get("timestamp", "")))


def _shown(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the demo shows of a run: the plan, the reaper's planned actions, warnings and errors.
    The settings, the apply steps and the summary are in the log files and the closing table."""
    return [e for e in events if e.get("event") == "plan" or e.get("level") in ("warning", "error")
            or (e.get("action") and e.get("phase") == "plan")]


def count_coderd(fake: FakeCoderd, run: Run) -> None:
    with fake.lock:
        run.requests = len(fake.log)
        run.writes = sum(1 for r in fake.log if r.is_write and r.path not in SESSION_PATHS)
        fake.log.clear()


def seed_workspaces(fake: FakeCoderd) -> tuple[float, float]:
    """40 running workspaces with distinct idle times; returns the shortest and longest, in seconds."""
    now = datetime.fromtimestamp(fake.now(), UTC)
    specs, idle = [], []
    for i in range(40):
        hours = [0.2, 1, 3, 26][i % 4] + i / 10  # distinct ages, so "oldest first" shows
        idle.append(hours * 3600)
        specs.append({"owner": f"dev{i % 8}", "name": f"ws{i}", "template": "ameide-dev", "transition": "start",
                      "job_status": "succeeded", "last_used_at": now - timedelta(hours=hours),
                      "completed_at": now - timedelta(hours=hours + 1)})
    fake.seed_workspaces(specs)
    return min(idle), max(idle)


@dataclass
class KubeBuild:
    """The kube-apiserver and etcd build, in a thread while the Coder-only steps run."""

    future: Future[Any]
    cold: bool  # something is compiled (first run, or a module or Go changed)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, executor: ThreadPoolExecutor) -> KubeBuild:
        from tests.kube import server

        cold = server.needs_build(server.API_SERVER_STEPS)  # asked first: the build writes its stamps
        return cls(executor.submit(server.build, server.API_SERVER_STEPS), cold)

    def wait(self, say: Callable[[str], None], every_s: float = PROGRESS_EVERY_S,
             clock: Callable[[], float] = time.monotonic) -> None:
        """Until the build is done, a line every `every_s` saying it still runs and for how long.
        Raises what the build raised."""
        while True:
            try:
                self.future.result(timeout=every_s)
                return
            except TimeoutError:
                say(f"{DIM}... still building the real kube-apiserver and etcd: {human_seconds(clock() - self.started)} "
                    f"so far (a cold build takes 6-10 minutes on 2 cores){RESET}")


def external_auth_step(demo: Demo, workdir: Path, step: int) -> None:
    """sync-external-auth against the real Kubernetes API server (create, no-op, rotation)."""
    import base64

    from tests.kube.cluster import JOBS, Cluster, running_cluster
    from tests.kube.server import API_SERVER_STEPS

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    def count(kube: Cluster, run: Run) -> None:
        run.requests, run.writes = len(kube.audit(JOBS)), len(kube.writes())
        kube.clear_log()

    with running_cluster(announce=None, only=API_SERVER_STEPS) as kube:
        labels = {"app.kubernetes.io/name": "coder"}
        kube.put("deployment", "coder", {"metadata": {"name": "coder", "labels": labels}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "coder", "image": "ghcr.io/coder/coder"}]}}}})
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-id"}, "data": {"value": b64("Iv1.demo0123456789\n")}})
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-secret"},
                                     "data": {"value": b64("demo-client-secret-4f1c9a7e2b\n")}})
        kube.clear_log()
        env = {"KUBECONFIG": kube.kubeconfig(workdir / "kubeconfig", namespace="coder"), "POD_NAMESPACE": "coder",
               "CODER_DEPLOYMENT": "coder"}
        demo.banner(step, f"PreSync: sync-external-auth (real kube-apiserver {kube.version})",
                    "only it needs Kubernetes, so last: create the Secret, re-run (no write), rotate (one rollout)")
        count(kube, demo.run(step, ["sync-external-auth"], env))
        count(kube, demo.run(step, ["sync-external-auth"], env))
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-secret"},
                                     "data": {"value": b64("demo-client-secret-rotated-9d3e\n")}})
        kube.clear_log()
        count(kube, demo.run(step, ["sync-external-auth"], env))


def main(argv: list[str]) -> int:
    kubernetes = _has("jobs.sync_external_auth")
    missing = missing_prerequisites() if kubernetes else None
    if missing:
        print(missing, end="", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kube-build") as executor:
        build = KubeBuild.start(executor) if kubernetes else None
        return _demo(argv, build)


def _demo(argv: list[str], build: KubeBuild | None) -> int:
    password = "Demo-Admin-Passw0rd!-7Qx"
    workdir = Path(tempfile.mkdtemp(prefix="coder-jobs-demo-"))
    # `--logs DIR` keeps every run's log there; by default a new temporary folder, named in the table.
    logs = Path(argv[argv.index("--logs") + 1]) if "--logs" in argv else Path(tempfile.mkdtemp(prefix="coder-jobs-demo-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    templates = workdir / "coder-templates"
    shutil.copytree(REPO / "chart" / "files" / "coder-templates", templates)
    demo = Demo(logs)
    # GitHub external auth configured, as the PreSync hook's Secret gives coderd.
    with FakeCoderd(external_auth_providers=("github",)) as coderd:
        env = {
            "CODER_URL": coderd.url,
            "CODER_ADMIN_USERNAME": "platform-admin",
            "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
            "CODER_ADMIN_PASSWORD": password,
            "TEMPLATES_DIR": str(templates),
            "TEMPLATES_REVISION": "demo-1",
            "CODER_READY_TIMEOUT": "30",
        }
        print(f"{BOLD}coder-jobs demo{RESET}: the real CLI against a coderd fake at {coderd.url}; under each command "
              "its plan and warnings")
        if build is not None and build.cold:
            print(f"{DIM}The real kube-apiserver and etcd are building in the background (first run only, cached in "
                  f".cache/kube/); steps 1-5 need only coderd and run meanwhile.{RESET}", flush=True)

        demo.banner(1, "First sync (PostSync hooks)", "a fresh coderd: no users, no templates")
        count_coderd(coderd, demo.run(1, ["bootstrap-admin"], env))
        count_coderd(coderd, demo.run(1, ["republish-templates"], env))

        demo.banner(2, "Re-sync with nothing changed", "recover = wait + bootstrap-admin + republish-templates; zero writes")
        count_coderd(coderd, demo.run(2, ["recover"], env))

        demo.banner(3, "A template edit", "one file of ameide-dev changes: one new version, for that template only")
        main_tf = templates / "ameide-dev" / "main.tf"
        main_tf.write_text(main_tf.read_text() + "\n# demo edit\n")
        count_coderd(coderd, demo.run(3, ["republish-templates"], {**env, "TEMPLATES_REVISION": "demo-2"}))

        demo.banner(4, "Database reset", "coderd comes back empty: doctor reports the drift, recover heals it")
        coderd.reset_database()
        count_coderd(coderd, demo.run(4, ["doctor"], env, expected=1, why="drift, coderd lost its first user"))
        count_coderd(coderd, demo.run(4, ["recover"], env))

        if _has("jobs.reap"):
            shortest, longest = seed_workspaces(coderd)
            coderd.clear_log()
            demo.banner(5, "Reaper pass", f"40 running workspaces, idle {human_seconds(shortest)} to "
                        f"{human_seconds(longest)}; REAP_IDLE_AFTER=2h, REAP_MAX_STOPS=5: the 5 oldest idle are stopped")
            count_coderd(coderd, demo.run(5, ["reap"], {**env, "REAP_IDLE_AFTER": "2h", "REAP_MAX_STOPS": "5"}))

        if build is not None:
            try:
                build.wait(lambda line: print(line, flush=True))
            except Exception as exc:  # noqa: BLE001 - the Coder steps ran; say why this one cannot
                demo.problems.append("step 6 did not run: the kube-apiserver build failed")
                print(f"the real kube-apiserver could not be built, so step 6 cannot run: {str(exc)[-2000:]}",
                      file=sys.stderr)
            else:
                external_auth_step(demo, workdir, step=6)

    shutil.rmtree(workdir, ignore_errors=True)
    return demo.table()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
