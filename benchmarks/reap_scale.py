"""Reaper at scale: seed N workspaces into an in-process FakeCoderd, run `coder-jobs reap` in a
subprocess, print wall time, the job's peak RSS, list requests and cost per workspace.

    .venv/bin/python benchmarks/reap_scale.py [SIZES...]     # default: 1000 10000

For every size: one `--dry-run` pass and one real pass (REAP_MAX_STOPS=20, REAP_MAX_RUNNING_PER_USER=4
in report mode), each in a fresh process whose peak RSS is read with RUSAGE_CHILDREN by a
one-child wrapper. Not a test.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fakes.coderd import FakeCoderd  # noqa: E402

H = timedelta(hours=1)


def specs_for(n: int, now: datetime, rng: random.Random) -> list[dict]:
    """A realistic mix: ~40% running (a quarter of those idle), the rest stopped; 1 owner per 8 workspaces."""
    owners = max(1, n // 8)
    out = []
    for i in range(n):
        r = rng.random()
        owner = f"user{rng.randrange(owners):05d}"
        base = {"owner": owner, "name": f"ws{i:06d}", "template": rng.choice(["ameide-dev", "ameide-gitops"])}
        if r < 0.10:  # idle running
            lu = now - (3 + rng.random() * 100) * H
            out.append({**base, "transition": "start", "job_status": "succeeded", "last_used_at": lu, "completed_at": lu - H})
        elif r < 0.40:  # active running
            out.append({**base, "transition": "start", "job_status": "succeeded",
                        "last_used_at": now - rng.random() * H, "completed_at": now - 5 * H})
        elif r < 0.41:  # busy
            out.append({**base, "transition": "start", "job_status": "running", "last_used_at": now - 50 * H,
                        "completed_at": None})
        else:  # stopped
            out.append({**base, "transition": "stop", "job_status": "succeeded", "last_used_at": now - 50 * H,
                        "completed_at": now - 40 * H})
    return out


# A one-child wrapper, so RUSAGE_CHILDREN's ru_maxrss is exactly the job process's peak RSS.
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "sys.stderr.write('MAXRSS_KIB=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


def run_reap(env: dict[str, str], *args: str) -> tuple[float, int, dict, int]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "jobs", "--log-format", "json", "reap", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - t0
    peak = int(proc.stderr.rsplit("MAXRSS_KIB=", 1)[1].split()[0])  # KiB on Linux
    summary = {}
    lines = 0
    for line in proc.stdout.splitlines():
        lines += 1
        if '"event": "summary"' in line:
            summary = json.loads(line)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"reap exited {proc.returncode}")
    return wall, peak, summary, lines


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1000, 10000]
    print(f"{'size':>7} {'mode':>8} {'wall_s':>8} {'peak_rss_MiB':>12} {'list_req':>8} {'scanned':>8} "
          f"{'stopped':>7} {'deferred':>8} {'log_lines':>9} {'us/ws':>8}")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_", "REAP_"))}
    base_env.pop("KUBERNETES_SERVICE_HOST", None)
    for n in sizes:
        fake = FakeCoderd().start()
        try:
            fake.create_user("admin", password="Bench-Passw0rd!")
            now = datetime.fromtimestamp(fake.now(), tz=UTC)
            specs = specs_for(n, now, random.Random(n))
            for o in sorted({s["owner"] for s in specs}):
                fake.create_user(o, roles=())
            t0 = time.monotonic()
            fake.seed_workspaces(specs)
            seed_s = time.monotonic() - t0
            env = {**base_env, "CODER_URL": fake.url, "CODER_SESSION_TOKEN": fake.token_for("admin"),
                   "REAP_MAX_STOPS": "20", "REAP_MAX_RUNNING_PER_USER": "4", "CODER_READY_TIMEOUT": "30"}
            for mode, args in (("dry-run", ("--dry-run",)), ("real", ())):
                fake.clear_log()
                wall, peak_kib, s, lines = run_reap(env, *args)
                lists = len(fake.requests("GET", r"^/api/v2/workspaces$"))
                print(f"{n:>7} {mode:>8} {wall:>8.2f} {peak_kib / 1024:>12.1f} {lists:>8} {s.get('scanned', 0):>8} "
                      f"{s.get('stopped', 0):>7} {s.get('deferred', 0):>8} {lines:>9} {wall / n * 1e6:>8.1f}", flush=True)
            print(f"        (seeding {n} took {seed_s:.1f}s)", flush=True)
        finally:
            fake.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
