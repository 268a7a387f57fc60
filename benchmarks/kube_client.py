"""Three ways to make jobs/kube.py's calls with the official `kubernetes` client, compared by the
CPU (user+sys) of the whole process: `python -m benchmarks.kube_client [--repeat N]`.

Each way is a small standalone script run as its own process against the real kube-apiserver
(`tests/kube/`), making the reads a converged `sync-external-auth` makes (three Secrets), with
the configuration loaded from a kubeconfig as the job loads it, and nothing cached from an
earlier run (a fresh TMPDIR each time, as in a new pod). Against them, the floor:
`python -c "import kubernetes.config"`, which every way pays (the package's `__init__` imports
its client, config, dynamic, watch and stream modules). benchmarks/KUBE_CLIENT.md records a run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.kube.cluster import Cluster, running_cluster  # noqa: E402

NAMES = ("coder-github-oauth-client-id", "coder-github-oauth-client-secret", "coder-external-auth-github")

_CONFIG = """
import os, sys
from kubernetes import config
api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
ns, names = sys.argv[1], sys.argv[2:]
"""

WAYS = {
    "import kubernetes.config (the floor)": "import kubernetes.config",
    "typed CoreV1Api (until now)": _CONFIG + """
from kubernetes.client import CoreV1Api
core = CoreV1Api(api)
for name in names:
    assert core.read_namespaced_secret(name, ns).metadata.name == name
""",
    "ApiClient.call_api, JSON parsed by us (chosen)": _CONFIG + """
import json
for name in names:
    request = api.param_serialize("GET", f"/api/v1/namespaces/{ns}/secrets/{name}", auth_settings=["BearerToken"],
                                  header_params={"Accept": "application/json"})
    response = api.call_api(*request)
    assert json.loads(response.read())["metadata"]["name"] == name
""",
    "dynamic client (discovery on each start)": _CONFIG + """
from kubernetes.dynamic import DynamicClient
secrets = DynamicClient(api).resources.get(api_version="v1", kind="Secret")
for name in names:
    assert secrets.get(name=name, namespace=ns).metadata.name == name
""",
}


def cpu_of(argv: list[str], env: dict[str, str] | None = None) -> float:
    """User+sys CPU seconds of one child process, everything it ran included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def seed(kube: Cluster, ns: str) -> None:
    for name in NAMES:
        kube.put("secret", ns, {"metadata": {"name": name}, "data": {"value": "dmFsdWU="}})


def measure(kube: Cluster, repeat: int) -> list[tuple[str, float, float, int]]:
    """(way, median CPU s, min CPU s, API requests per run)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ns = "coder"
        seed(kube, ns)
        env = {"KUBECONFIG": kube.kubeconfig(Path(tmp) / "kubeconfig", namespace=ns), "PATH": "/usr/bin:/bin"}
        for way, code in WAYS.items():
            cpus = []
            for i in range(repeat):
                kube.clear_log()
                # A fresh TMPDIR each run, as in a new pod: the dynamic client caches discovery there.
                fresh = Path(tmp) / f"tmp-{len(rows)}-{i}"
                fresh.mkdir()
                cpus.append(cpu_of([sys.executable, "-c", code, ns, *NAMES], {**env, "TMPDIR": str(fresh)}))
            rows.append((way, statistics.median(cpus), min(cpus), len(kube.requests())))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kube_client", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5, help="runs per way, median printed (default 5)")
    args = p.parse_args(argv)
    with running_cluster() as kube:
        rows = measure(kube, args.repeat)
    floor = rows[0][1]
    print(f"\n| way | CPU s (median of {args.repeat}) | min | × the floor | API requests |")
    print("|---|---|---|---|---|")
    for way, median, low, requests in rows:
        print(f"| {way} | {median:.2f} | {low:.2f} | {median / floor:.2f}× | {requests} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
