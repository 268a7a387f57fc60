"""The whole coder-jobs lifecycle on a laptop, against what the tests use: the coderd fake and
a real kube-apiserver + etcd (built from `tests/kube/` on first use, cached in `.cache/kube/`).

    ./dev demo

Each step runs the real `coder-jobs` CLI in its own process (as a Kubernetes Job would) and
then shows what the servers saw: requests by kind, and what changed.
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
                         if r.is_write and r.path not in ("/api/v2/users/login", "/api/v2/users/logout"))
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
        idle_hours = [0.2, 1, 3, 26][i % 4] + i / 10  # distinct ages, so "oldest first" shows
        specs.append({"owner": owner, "name": f"ws{i}", "template": "ameide-dev", "transition": "start",
                      "job_status": "succeeded", "last_used_at": now - timedelta(hours=idle_hours),
                      "completed_at": now - timedelta(hours=idle_hours + 1)})
    fake.seed_workspaces(specs)


def external_auth_step(workdir: Path) -> int:
    """Step 0: sync-external-auth against the real Kubernetes API server (create, no-op, rotation)."""
    import base64

    from tests.kube.cluster import JOBS, Cluster, running_cluster

    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    def show_kube(fake: Cluster) -> None:
        audited = len(fake.audit(JOBS))
        writes = Counter(f"{r.method} {r.path.split('/')[-2] if r.method != 'POST' else r.path.split('/')[-1]}"
                         for r in fake.writes())
        fake.clear_log()
        target = fake.get_object("secret", "coder", "coder-external-auth-github")
        checksum = ((target or {}).get("metadata", {}).get("annotations") or {}).get("coder-jobs.ameide.io/checksum", "")
        print(f"   kube-apiserver audited {audited} requests from the job; writes: {dict(writes) or 'none'}")
        print(f"   target keys: {sorted((target or {}).get('data') or {})}  checksum: {checksum[:19] or '-'}  "
              f"coderd rollouts: {len(fake.rollouts('coder', 'coder'))}  events: "
              f"{[e['reason'] for e in fake.objects('event', 'coder')]}")

    failures = 0
    with running_cluster() as kube:
        print(f"   kube-apiserver {kube.version} (real) on {kube.server.url}, jobs through {kube.url}")
        labels = {"app.kubernetes.io/name": "coder"}
        kube.put("deployment", "coder", {"metadata": {"name": "coder", "labels": labels}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "coder", "image": "ghcr.io/coder/coder"}]}}}})
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-id"}, "data": {"value": b64("Iv1.demo0123456789\n")}})
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-secret"},
                                     "data": {"value": b64("demo-client-secret-4f1c9a7e2b\n")}})
        env = {"KUBECONFIG": kube.kubeconfig(workdir / "kubeconfig", namespace="coder"), "POD_NAMESPACE": "coder",
               "CODER_DEPLOYMENT": "coder"}
        banner(0, "PreSync: sync-external-auth", "Two source Secrets -> coder-external-auth-github; then a re-run "
               "(3 reads, no write), then a rotated client secret (update + one coderd rollout).")
        failures += run(["sync-external-auth"], env) != 0
        show_kube(kube)
        failures += run(["sync-external-auth"], env) != 0
        show_kube(kube)
        kube.put("secret", "coder", {"metadata": {"name": "coder-github-oauth-client-secret"},
                                     "data": {"value": b64("demo-client-secret-rotated-9d3e\n")}})
        failures += run(["sync-external-auth"], env) != 0
        show_kube(kube)
    return failures


def main() -> int:
    password = "Demo-Admin-Passw0rd!-7Qx"
    workdir = Path(tempfile.mkdtemp(prefix="coder-jobs-demo-"))
    templates = workdir / "coder-templates"
    shutil.copytree(REPO / "chart" / "files" / "coder-templates", templates)
    failures = 0
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
        print(f"{BOLD}coder-jobs demo{RESET}: coderd fake at {coderd.url}; templates copied to {templates}")

        if _has("jobs.sync_external_auth"):
            failures += external_auth_step(workdir)

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
