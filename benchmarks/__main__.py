"""coder-jobs benchmarks: `./dev bench` (= `.venv/bin/python -m benchmarks`).

Every figure comes from the real CLI run as its own process (as a Kubernetes Job runs it)
against the in-process coderd fake or the real kube-apiserver (`tests/kube/`, built on first
use); request counts come from the coderd fake's request log and the API server's audit log.

    python -m benchmarks                       # everything, reaper at 1,000 / 10,000 / 50,000
    python -m benchmarks --quick               # reaper at 1,000 / 5,000, fewer repeats
    python -m benchmarks --reap-sizes 1000,20000 --only noop,startup,reap,republish --repeat 5

Goals (issues 7 and 22) are printed next to the figures; a missed goal makes the exit code 1. They
are figures, not timed tests: wall times depend on the machine, printed at the end. CPU figures
are user+sys of the whole job process (`getrusage(RUSAGE_CHILDREN)` around it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import kube_client, reap_scale  # noqa: E402
from fakes.coderd import FakeCoderd  # noqa: E402
from tests.kube.cluster import JOBS, Cluster, running_cluster  # noqa: E402

TEMPLATES_DIR = REPO / "chart" / "files" / "coder-templates"
ADMIN = {"CODER_ADMIN_USERNAME": "platform-admin", "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
         "CODER_ADMIN_PASSWORD": "Bench-Passw0rd-7x!", "CODER_READY_TIMEOUT": "30"}
NOOP_CODER_GOAL = 8
NOOP_KUBE_GOAL = 3
NOOP_SYNC_CPU_GOAL = 1.5  # the no-op sync-external-auth's CPU, at most this times `import kubernetes.config`'s


@dataclass
class Row:
    section: str
    figure: str
    value: str
    goal: str = ""
    ok: bool | None = None  # None: no goal


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, section: str, figure: str, value: str, goal: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(section, figure, value, goal, ok))

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]


# ---------------------------------------------------------------------------- helpers


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODER_", "TEMPLATES", "TEMPLATE_", "REAP_", "EXTERNAL_AUTH", "POD_NAMESPACE"))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(extra)
    return env


def children_cpu_s() -> float:
    """User+sys CPU seconds of every child process this one has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_job(args: list[str], env: dict[str, str], *, python_flags: tuple[str, ...] = ()) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *python_flags, "-m", "jobs", "--log-format", "json", *args],
                          env=clean_env(env), cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"coder-jobs {' '.join(args)} exited {proc.returncode}")
    return wall, proc


def by_route(fake) -> Counter:
    with fake.lock:
        return Counter(r.route for r in fake.log)


def print_routes(title: str, routes: Counter) -> None:
    print(f"  {title}: {sum(routes.values())} requests")
    for route, n in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"    {n:>4}  {route}")


def median_wall(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s" + (f" (min {min(times):.2f}, n={len(times)})" if len(times) > 1 else "")


def coderd_env(fake: FakeCoderd, templates: Path = TEMPLATES_DIR) -> dict[str, str]:
    return {"CODER_URL": fake.url, **ADMIN, "TEMPLATES_DIR": str(templates), "TEMPLATES_REVISION": "bench",
            "TEMPLATE_BUILD_TIMEOUT": "60"}


# ---------------------------------------------------------------------------- no-op cost


def seed_external_auth(kube: Cluster, ns: str = "coder") -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    kube.put("secret", ns, {"metadata": {"name": "coder-github-oauth-client-id"}, "data": {"value": b64("Iv1.bench\n")}})
    kube.put("secret", ns, {"metadata": {"name": "coder-github-oauth-client-secret"},
                            "data": {"value": b64("0123456789abcdef0123456789abcdef01234567\n")}})
    labels = {"app.kubernetes.io/name": "coder"}
    kube.put("deployment", ns, {"metadata": {"name": "coder", "labels": labels}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "coder", "image": "coder"}]}}}})


def audited_routes(kube: Cluster) -> Counter:
    """The job's requests as the API server audited them: `verb resource/name`."""
    return Counter(f"{e['verb']} {e['objectRef'].get('resource', '')}/{e['objectRef'].get('name', '')}"
                   for e in kube.audit(JOBS))


def bench_noop(report: Report, repeat: int, kube: Cluster) -> None:
    print("\n## No-op cost (everything already converged)")
    with FakeCoderd(provisioner_delay=0.0, external_auth_providers=("github",)) as fake:
        env = coderd_env(fake)
        run_job(["recover"], env)  # converge: first user, both templates
        walls, routes = [], Counter()
        for _ in range(repeat):
            fake.clear_log()
            wall, _proc = run_job(["recover"], env)
            walls.append(wall)
            routes = by_route(fake)
            sessions = ("/api/v2/users/login", "/api/v2/users/logout")
            assert not [r for r in fake.log if r.is_write and r.path not in sessions], "the no-op recover wrote"
        print_routes("recover, Coder API", routes)
        total = sum(routes.values())
        report.add("No-op", "`recover`: Coder API requests", str(total), f"≤ {NOOP_CODER_GOAL}", total <= NOOP_CODER_GOAL)
        report.add("No-op", "`recover`: whole-process wall time", median_wall(walls))
        print(f"  wall: {median_wall(walls)}")

    with tempfile.TemporaryDirectory() as tmp:
        ns = "coder"
        kube.reset()
        seed_external_auth(kube, ns)
        env = {"KUBECONFIG": kube.kubeconfig(Path(tmp) / "kubeconfig", namespace=ns), "POD_NAMESPACE": ns,
               "CODER_DEPLOYMENT": "coder"}
        run_job(["sync-external-auth"], env)
        walls, cpus, floors = [], [], []
        for _ in range(repeat):
            kube.clear_log()
            cpu = children_cpu_s()
            wall, _proc = run_job(["sync-external-auth"], env)
            cpus.append(children_cpu_s() - cpu)
            floors.append(kube_client.cpu_of([sys.executable, "-c", "import kubernetes.config"]))
            walls.append(wall)
            routes = audited_routes(kube)
            assert not kube.writes(), "the no-op sync wrote"
            assert sum(routes.values()) == len(kube.requests()), "the audit log and the proxy disagree"
        print_routes(f"sync-external-auth, Kubernetes API (real kube-apiserver {kube.version}, audit log)", routes)
        total = sum(routes.values())
        report.add("No-op", "`sync-external-auth`: Kubernetes requests", str(total), f"≤ {NOOP_KUBE_GOAL}",
                   total <= NOOP_KUBE_GOAL)
        report.add("No-op", "`sync-external-auth`: whole-process wall time", median_wall(walls))
        print(f"  wall: {median_wall(walls)}")
        cpu, floor = statistics.median(cpus), statistics.median(floors)
        print(f"  CPU (user+sys, whole process): {cpu:.2f} s; `python -c \"import kubernetes.config\"` in the same run:"
              f" {floor:.2f} s ({cpu / floor:.2f}×)")
        report.add("No-op", "`sync-external-auth`: CPU vs `python -c \"import kubernetes.config\"` (medians)",
                   f"{cpu:.2f} s vs {floor:.2f} s = {cpu / floor:.2f}×", f"< {NOOP_SYNC_CPU_GOAL}×",
                   cpu < NOOP_SYNC_CPU_GOAL * floor)


# ---------------------------------------------------------------------------- start-up


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def import_profile(stderr: str) -> tuple[float, set[str], list[tuple[int, str]]]:
    """(total ms, top-level packages imported, the largest cumulative top-level imports)."""
    total_us, packages, top = 0, set(), []
    for line in stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if not m:
            continue
        self_us, cumulative_us, indent, name = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
        total_us += self_us
        packages.add(name.split(".")[0])
        if len(indent) <= 1:
            top.append((cumulative_us, name))
    return total_us / 1000, packages, sorted(top, reverse=True)[:5]


def bench_startup(report: Report, repeat: int, kube: Cluster) -> None:
    print("\n## Start-up: python -X importtime (sum of every module's own import time)")
    with FakeCoderd(provisioner_delay=0.0, external_auth_providers=("github",)) as fake:
        env = coderd_env(fake)
        run_job(["bootstrap-admin"], env)
        with tempfile.TemporaryDirectory() as tmp:
            kube.reset()
            try:
                kube_env = {"KUBECONFIG": kube.kubeconfig(Path(tmp) / "kubeconfig", namespace="coder"),
                            "POD_NAMESPACE": "coder"}
                kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-id"},
                                             "data": {"value": base64.b64encode(b"Iv1.x").decode()}})
                kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-secret"},
                                             "data": {"value": base64.b64encode(b"0123456789abcdef").decode()}})
                cases = [
                    ("coder-jobs --help", ["--help"], {}, False),
                    ("bootstrap-admin (converged coderd)", ["bootstrap-admin"], env, False),
                    ("reap (no REAP_WORKSPACE_NAMESPACE)", ["reap"], {"CODER_URL": fake.url,
                                                                       "CODER_SESSION_TOKEN": fake.token_for("platform-admin")}, False),
                    ("sync-external-auth (for contrast)", ["sync-external-auth"], kube_env, True),
                ]
                for title, args, case_env, needs_kube in cases:
                    totals, walls, packages, top = [], [], set(), []
                    for _ in range(repeat):
                        wall, proc = run_job(args, case_env, python_flags=("-X", "importtime"))
                        total_ms, packages, top = import_profile(proc.stderr)
                        totals.append(total_ms)
                        walls.append(wall)
                    imported = "kubernetes" in packages
                    verdict = "imported" if imported else "not imported"
                    ok = imported == needs_kube
                    print(f"  {title}: imports {statistics.median(totals):.0f} ms, process {statistics.median(walls):.2f} s,"
                          f" kubernetes {verdict} {'✓' if ok else '✗ (must not be)'}")
                    print("    largest: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top))
                    report.add("Start-up", f"{title}: import time / process wall",
                               f"{statistics.median(totals):.0f} ms / {statistics.median(walls):.2f} s")
                    report.add("Start-up", f"{title}: `kubernetes` imported", "yes" if imported else "no",
                               "yes" if needs_kube else "no", ok)
            finally:
                kube.reset()


# ---------------------------------------------------------------------------- the Kubernetes client


def bench_kube_client(report: Report, repeat: int, kube: Cluster) -> None:
    print("\n## Kubernetes client: three ways to make the job's calls (benchmarks/kube_client.py; CPU user+sys)")
    kube.reset()
    try:
        rows = kube_client.measure(kube, repeat)
    finally:
        kube.reset()
    floor = rows[0][1]
    for way, cpu, low, requests in rows:
        print(f"  {way}: {cpu:.2f} s (min {low:.2f}, {cpu / floor:.2f}× the floor), {requests} API requests")
        report.add("Kubernetes client", f"{way}: CPU / API requests", f"{cpu:.2f} s ({cpu / floor:.2f}×) / {requests}")


# ---------------------------------------------------------------------------- reaper at scale


def reap_once(n: int) -> tuple[float, float, int, dict, float]:
    """Seed n workspaces, run one real reap pass: (wall s, peak RSS KiB, list requests, summary, seeding s)."""
    with FakeCoderd() as fake:
        fake.create_user("admin", password="Bench-Passw0rd-7x!")
        now = datetime.fromtimestamp(fake.now(), tz=UTC)
        specs = reap_scale.specs_for(n, now, random.Random(n))
        for owner in sorted({s["owner"] for s in specs}):
            fake.create_user(owner, roles=())
        t0 = time.perf_counter()
        fake.seed_workspaces(specs)
        seed_s = time.perf_counter() - t0
        env = clean_env({"CODER_URL": fake.url, "CODER_SESSION_TOKEN": fake.token_for("admin"),
                         "REAP_MAX_STOPS": "20", "REAP_MAX_RUNNING_PER_USER": "4", "CODER_READY_TIMEOUT": "30"})
        fake.clear_log()
        wall, peak_kib, cpu_s, summary = run_reap_measured(env)
        lists = len(fake.requests("GET", r"^/api/v2/workspaces$"))
    return wall, peak_kib, lists, summary, seed_s, cpu_s


# reap_scale's one-child wrapper, also reporting the job's own CPU time: the wall time includes
# waiting on the fake (which filters every page in this process), the CPU time is the job alone.
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "sys.stderr.write('MAXRSS_KIB=%d CPU_S=%f\\n' % (u.ru_maxrss, u.ru_utime + u.ru_stime))\n"
    "sys.exit(rc)\n"
)


def run_reap_measured(env: dict[str, str]) -> tuple[float, int, float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "jobs", "--log-format", "json", "reap"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"reap exited {proc.returncode}")
    m = re.search(r"MAXRSS_KIB=(\d+) CPU_S=([\d.]+)", proc.stderr)
    summary = next((json.loads(line) for line in proc.stdout.splitlines() if '"event": "summary"' in line), {})
    return wall, int(m.group(1)), float(m.group(2)), summary


def bench_reap(report: Report, sizes: list[int]) -> None:
    print("\n## Reaper at scale (benchmarks/reap_scale.py's mix: 40% running, a quarter of those idle;"
          " REAP_MAX_STOPS=20, REAP_MAX_RUNNING_PER_USER=4)")
    base_wall, base_kib, _lists, _summary, _seed, base_cpu = reap_once(0)
    print(f"  fixed cost (0 workspaces): {base_wall:.2f} s wall, {base_cpu:.2f} s CPU, {base_kib / 1024:.1f} MiB peak RSS")
    print("  marginal = (figure - figure at the previous size) / (size - previous size); the first size is measured"
          " against 0 workspaces and also carries the 20 stops (a re-read and a POST each). CPU is the job process"
          " alone; wall also waits on the fake, which filters every page in the benchmark's process")
    print(f"  {'size':>7} {'seed_s':>7} {'wall_s':>7} {'cpu_s':>6} {'peak_MiB':>9} {'lists':>6} {'scanned':>8}"
          f" {'stopped':>7} {'wall_us/ws':>10} {'cpu_us/ws':>9} {'lists/1k':>8}")
    prev_n, prev_wall, prev_cpu, marginals, peaks = 0, base_wall, base_cpu, [], []
    for n in sizes:
        wall, peak_kib, lists, summary, seed_s, cpu = reap_once(n)
        peaks.append(peak_kib)
        m_wall = max(wall - prev_wall, 0.0) / (n - prev_n) * 1e6
        m_cpu = max(cpu - prev_cpu, 0.0) / (n - prev_n) * 1e6
        marginals.append(m_cpu)
        print(f"  {n:>7} {seed_s:>7.1f} {wall:>7.2f} {cpu:>6.2f} {peak_kib / 1024:>9.1f} {lists:>6}"
              f" {summary.get('scanned', 0):>8} {summary.get('stopped', 0):>7} {m_wall:>10.1f} {m_cpu:>9.1f}"
              f" {lists / n * 1000:>8.2f}", flush=True)
        report.add("Reaper", f"{n:,} workspaces: wall / job CPU / peak RSS / list requests",
                   f"{wall:.2f} s / {cpu:.2f} s / {peak_kib / 1024:.0f} MiB / {lists}")
        report.add("Reaper", f"{n:,} workspaces: marginal per workspace from {prev_n:,}: wall / job CPU",
                   f"{m_wall:.0f} µs / {m_cpu:.0f} µs")
        prev_n, prev_wall, prev_cpu = n, wall, cpu
    if len(marginals) >= 3:
        ratio = marginals[-1] / marginals[-2] if marginals[-2] else float("inf")
        report.add("Reaper", f"linearity: job CPU per workspace, {sizes[-2]:,}→{sizes[-1]:,} vs {sizes[-3]:,}→{sizes[-2]:,}",
                   f"{ratio:.2f}×", "≈1× (linear)", 0.5 <= ratio <= 2.0)
    # Flat: the plan keeps per-owner counters and a bounded heap, so peak RSS may grow with the
    # number of owners, never with the number of workspaces. Judged, not just printed.
    growth = peaks[-1] / peaks[0] if peaks and peaks[0] else float("inf")
    report.add("Reaper", f"memory: peak RSS at {sizes[-1]:,} vs {sizes[0]:,} workspaces "
               f"({sizes[-1] / sizes[0]:.0f}× the workspaces; {base_kib / 1024:.0f} MiB with none)",
               f"{growth:.2f}×", "≤ 1.5× (flat)", growth <= 1.5)


# ---------------------------------------------------------------------------- republish


def job_waits(fake: FakeCoderd) -> float:
    """Seconds between each POST /templateversions and the poll that first saw its job finished."""
    with fake.lock:
        log = list(fake.log)
    total = 0.0
    for i, r in enumerate(log):
        if r.method == "POST" and r.path.endswith("/templateversions") and r.status == 201:
            vid = r.response["id"]
            for later in log[i + 1:]:
                if later.method == "GET" and later.path == f"/api/v2/templateversions/{vid}" and later.status == 200 \
                        and later.response["job"]["status"] in ("succeeded", "failed", "canceled"):
                    total += later.time - r.time
                    break
    return total


def bench_republish(report: Report, repeat: int) -> None:
    print("\n## Republish (provisioner_delay=0: the fake builds at once; job wait = POST version -> poll saw it done)")
    for title, edit in (("fresh publish of both templates", False), ("one-file change", True)):
        walls, waits, routes = [], [], Counter()
        for _ in range(repeat):
            with FakeCoderd(provisioner_delay=0.0, external_auth_providers=("github",)) as fake, tempfile.TemporaryDirectory() as tmp:
                templates = Path(tmp) / "coder-templates"
                shutil.copytree(TEMPLATES_DIR, templates)
                env = coderd_env(fake, templates)
                fake.create_user("platform-admin", ADMIN["CODER_ADMIN_EMAIL"], ADMIN["CODER_ADMIN_PASSWORD"])
                if edit:
                    run_job(["republish-templates"], env)
                    main_tf = templates / "ameide-dev" / "main.tf"
                    main_tf.write_text(main_tf.read_text() + "\n# bench edit\n")
                fake.clear_log()
                wall, _proc = run_job(["republish-templates"], env)
                walls.append(wall)
                waits.append(job_waits(fake))
                routes = by_route(fake)
        print_routes(title, routes)
        print(f"  wall: {median_wall(walls)}; of which waiting for provisioner jobs: {statistics.median(waits):.2f} s")
        report.add("Republish", f"{title}: Coder API requests", f"{sum(routes.values())} "
                   f"({sum(n for r, n in routes.items() if not r.startswith('GET'))} writes incl. login)")
        report.add("Republish", f"{title}: wall (provisioner delay 0) / waiting on jobs",
                   f"{statistics.median(walls):.2f} s / {statistics.median(waits):.2f} s")


# ---------------------------------------------------------------------------- machine and table


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return [f"nproc: {os.cpu_count()}", f"CPU: {cpu}", f"memory: {mem}",
            f"Python: {platform.python_version()} ({platform.python_implementation()})", f"OS: {platform.platform()}"]


def print_table(report: Report) -> None:
    print("\n## Results\n")
    print("| Benchmark | Figure | Result | Goal |")
    print("|---|---|---|---|")
    for r in report.rows:
        goal = f"{r.goal} {'✓' if r.ok else '✗' if r.ok is False else ''}".strip() if r.goal else ""
        print(f"| {r.section} | {r.figure} | {r.value} | {goal} |")
    print("\nMachine: " + "; ".join(machine()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="reaper at 1,000 and 5,000 only, one run per figure")
    p.add_argument("--reap-sizes", help="comma list of reaper sizes (default 1000,10000,50000; --quick 1000,5000)")
    p.add_argument("--repeat", type=int, help="runs per figure, median printed (default 3; --quick 1)")
    p.add_argument("--only", help="comma list of sections: noop,startup,kube-client,reap,republish")
    args = p.parse_args(argv)
    sizes = [int(s) for s in (args.reap_sizes or ("1000,5000" if args.quick else "1000,10000,50000")).split(",")]
    repeat = args.repeat or (1 if args.quick else 3)
    sections = set((args.only or "noop,startup,kube-client,reap,republish").split(","))
    report = Report()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # The real kube-apiserver, only when a section runs sync-external-auth (built on first use).
        kube = stack.enter_context(running_cluster()) if sections & {"noop", "startup", "kube-client"} else None
        if "noop" in sections:
            bench_noop(report, repeat, kube)
        if "startup" in sections:
            bench_startup(report, repeat, kube)
        if "kube-client" in sections:
            bench_kube_client(report, repeat, kube)
    if "reap" in sections:
        bench_reap(report, sizes)
    if "republish" in sections:
        bench_republish(report, repeat)
    print_table(report)
    print(f"\n(benchmarks took {time.perf_counter() - started:.0f} s)")
    for r in report.failed:
        print(f"GOAL MISSED: {r.section}: {r.figure} = {r.value} (goal {r.goal})", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
