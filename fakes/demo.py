"""The whole coder-jobs lifecycle on a laptop, against the same fakes the tests use.

    ./dev demo

Each step runs the real `coder-jobs` CLI in its own process (as a Kubernetes Job would) and
then shows what the fakes saw: requests by kind, and what changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fakes.coderd import FakeCoderd

REPO = Path(__file__).resolve().parent.parent
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def banner(n: int, title: str, why: str) -> None:
    print(f"\n{BOLD}== {n}. {title}{RESET}\n{DIM}{why}{RESET}", flush=True)


def run(args: list[str], env: dict[str, str]) -> int:
    print(f"{DIM}$ coder-jobs {' '.join(args)}{RESET}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "jobs", "--log-format", "console", *args],
                          env={**os.environ, **env}, cwd=REPO)
    print(f"{DIM}-> exit {proc.returncode}{RESET}", flush=True)
    return proc.returncode


def show_coderd(fake: FakeCoderd) -> None:
    with fake.lock:
        writes = Counter(f"{r.method} {r.route.split(' ', 1)[-1]}" for r in fake.log
                         if r.is_write and r.path != "/api/v2/users/login")
        total = len(fake.log)
        templates = {t["name"]: t for t in fake.templates.values()}
        versions = fake.versions
        users = [u["username"] for u in fake.users.values() if u["username"] != "prebuilds"]
        fake.log.clear()
    print(f"   coderd saw {total} requests; writes: {dict(writes) or 'none'}")
    summary = {name: f"{sum(1 for v in versions.values() if v.get('template_id') == t['id'])} version(s)"
               for name, t in sorted(templates.items())}
    print(f"   users: {users}  templates: {summary or 'none'}")


def seed_workspaces(fake: FakeCoderd) -> None:
    now = datetime.fromtimestamp(fake.now(), timezone.utc)
    specs = []
    for i in range(40):
        owner = f"dev{i % 8}"
        idle_hours = [0.2, 1, 3, 26][i % 4]
        specs.append({"owner": owner, "name": f"ws{i}", "template": "ameide-dev", "transition": "start",
                      "job_status": "succeeded", "last_used_at": now - timedelta(hours=idle_hours),
                      "completed_at": now - timedelta(hours=idle_hours + 1)})
    fake.seed_workspaces(specs)


def main() -> int:
    password = "Demo-Admin-Passw0rd!-7Qx"
    workdir = Path(tempfile.mkdtemp(prefix="coder-jobs-demo-"))
    templates = workdir / "coder-templates"
    shutil.copytree(REPO / "chart" / "files" / "coder-templates", templates)
    failures = 0
    with FakeCoderd() as coderd:
        env = {
            "CODER_URL": coderd.url,
            "CODER_ADMIN_USERNAME": "platform-admin",
            "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
            "CODER_ADMIN_PASSWORD": password,
            "TEMPLATES_DIR": str(templates),
            "TEMPLATES_REVISION": "demo-1",
            "CODER_READY_TIMEOUT": "30",
        }
        print(f"{BOLD}coder-jobs demo{RESET}: coderd fake at {coderd.url}; templates copied to {templates}")

        banner(1, "First sync (PostSync hooks)", "A fresh coderd: no users, no templates. bootstrap-admin, then republish-templates.")
        failures += run(["bootstrap-admin"], env) != 0
        failures += run(["republish-templates"], env) != 0
        show_coderd(coderd)

        banner(2, "Re-sync with nothing changed", "recover = wait + bootstrap-admin + republish-templates; zero writes expected.")
        failures += run(["recover"], env) != 0
        show_coderd(coderd)

        banner(3, "A template edit", "One file of ameide-dev changes: exactly one new version, for that template only.")
        main_tf = templates / "ameide-dev" / "main.tf"
        main_tf.write_text(main_tf.read_text() + "\n# demo edit\n")
        failures += run(["republish-templates"], {**env, "TEMPLATES_REVISION": "demo-2"}) != 0
        show_coderd(coderd)

        banner(4, "Database reset", "The Postgres volume is recreated: coderd comes back empty. `recover` heals it.")
        coderd.reset_database()
        failures += run(["doctor"], env) != 1  # drift is the expected answer here
        failures += run(["recover"], env) != 0
        show_coderd(coderd)

        if _has("jobs.reap"):
            banner(5, "Reaper pass", "40 seeded running workspaces, idle for 12 min to 26 h; REAP_IDLE_AFTER=2h, REAP_MAX_STOPS=5.")
            seed_workspaces(coderd)
            coderd.clear_log()
            failures += run(["reap"], {**env, "REAP_IDLE_AFTER": "2h", "REAP_MAX_STOPS": "5"}) != 0
            show_coderd(coderd)

    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{BOLD}demo {'finished' if not failures else f'had {failures} unexpected exit code(s)'}{RESET}")
    return 1 if failures else 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
