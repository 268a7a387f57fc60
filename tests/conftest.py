"""Shared fixtures: the fakes on loopback, and the CLI run as its own process (tests/job_process.py)."""

from __future__ import annotations

import heapq
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fakes.coderd import FakeCoderd
from tests.job_process import launcher

REPO = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO / "chart" / "files" / "coder-templates"

# Canaries: if one of these shows up in any output, a secret leaked.
CANARY_PASSWORD = "Canary-Pw-7f3kq9Zx!2vB"
CANARY_SETUP_TOKEN = "canary-setup-token-5d8e1a"
CANARY_CLIENT_SECRET = "canary-client-secret-0b9c7e31f2"


@dataclass
class Result:
    """A finished `coder-jobs` process. `events` are the JSON events of both streams (info on
    stdout, warnings and errors on stderr), in the order they were logged."""

    rc: int
    stdout: str
    stderr: str
    events: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.events:
            self.events = parse_events(self.stdout, self.stderr)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def find(self, text: str) -> list[dict]:
        return [e for e in self.events if text in str(e.get("event", ""))]

    def errors(self) -> list[dict]:
        return [e for e in self.events if e.get("level") == "error"]


def parse_events(*streams: str) -> list[dict]:
    """JSON events of each stream, merged by timestamp (each stream keeps its own order)."""
    parsed = []
    for text in streams:
        events = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        parsed.append(events)
    return list(heapq.merge(*parsed, key=lambda e: str(e.get("timestamp", ""))))


def job_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any job setting of its own, plus `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_", "TEMPLATE", "REAP_", "EXTERNAL_AUTH"))}
    full.pop("KUBERNETES_SERVICE_HOST", None)
    full.update(env or {})
    return full


def run_job(*args: str, env: dict[str, str] | None = None, timeout: float = 120, log_format: str = "json") -> Result:
    """Run `python -m jobs` as a separate process, as a Kubernetes Job would (forked from a process
    that has imported the libraries already: see tests/job_process.py)."""
    return Result(*launcher().run(["--log-format", log_format, *args], job_env(env), timeout))


def run_jobs_at_once(*args: str, env: dict[str, str], n: int = 2) -> list[Result]:
    """`n` runs of the same job started together (two Argo CD syncs, a CronJob and a manual run)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: run_job(*args, env=env), range(n)))


def assert_no_secret(result: Result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout, "secret leaked to stdout"
        assert secret not in result.stderr, "secret leaked to stderr"


SESSION_PATHS = ("/api/v2/users/login", "/api/v2/users/logout")


def coder_writes(fake: FakeCoderd) -> list:
    """Requests that change coderd's state. A login proves credentials and its logout revokes that
    session again (tests count the API keys for that), so neither counts."""
    return [r for r in fake.writes() if r.path not in SESSION_PATHS]


def pytest_configure(config):
    config.addinivalue_line("markers", "external_auth(*ids): the external auth providers the `coderd` fixture has "
                                       "configured (default: github, as sync-external-auth sets up)")
    _kube_report_dir(config)


@pytest.fixture
def coderd(request):
    """A coderd fake as the chart installs it: GitHub external auth configured (sync-external-auth
    ran). `@pytest.mark.external_auth()` gives one without any, `external_auth("a", "b")` others."""
    marker = request.node.get_closest_marker("external_auth")
    fake = FakeCoderd(external_auth_providers=marker.args if marker else ("github",)).start()
    yield fake
    fake.stop()


@pytest.fixture
def admin_env(coderd):
    return {
        "CODER_URL": coderd.url,
        "CODER_ADMIN_USERNAME": "platform-admin",
        "CODER_ADMIN_EMAIL": "platform-admin@ameide.io",
        "CODER_ADMIN_PASSWORD": CANARY_PASSWORD,
        "CODER_ADMIN_NAME": "Platform Admin",
        "CODER_READY_TIMEOUT": "20",
    }


@pytest.fixture
def templates(tmp_path):
    """A private copy of the chart's templates, so a test may edit them."""
    root = tmp_path / "coder-templates"
    shutil.copytree(TEMPLATES_DIR, root)
    return root


@pytest.fixture
def templates_env(admin_env):
    return {**admin_env, "TEMPLATES_DIR": str(TEMPLATES_DIR), "TEMPLATES_REVISION": "test-rev", "TEMPLATE_BUILD_TIMEOUT": "30"}


@pytest.fixture(autouse=True)
def coderd_conformance(request):
    """Every exchange with any coderd fake in any test must match Coder's swagger.json.

    Records are checked as they happen (a test may clear the fake's log); problems fail
    the test at teardown. Without ../shared the check is skipped (test_conformance says why).
    """
    from fakes import base
    from tests import swagger

    if not swagger.available() or request.node.get_closest_marker("no_conformance"):
        yield
        return
    problems: list[str] = []
    seen: set[str] = set()

    def hook(fake, record):
        if isinstance(fake, FakeCoderd):
            for p in swagger.check_record(record):
                if p not in seen:
                    seen.add(p)
                    problems.append(p)

    base.RECORD_HOOKS.append(hook)
    yield
    base.RECORD_HOOKS.remove(hook)
    assert not problems, "exchanges that do not match Coder's swagger.json:\n" + "\n".join(problems[:30])


# ---------------------------------------------------------------- the real Kubernetes API server


def _kube_report_dir(config):
    # xdist workers inherit the environment: each writes what its server took to start here,
    # and the controller prints it at the end (a worker's own output is not shown).
    if not hasattr(config, "workerinput"):
        os.environ["CODER_JOBS_KUBE_REPORT"] = tempfile.mkdtemp(prefix="coder-jobs-kube-report-")


def pytest_terminal_summary(terminalreporter):
    report = Path(os.environ.get("CODER_JOBS_KUBE_REPORT", "/nonexistent"))
    lines = sorted({p.read_text().strip() for p in report.glob("*.txt")}) if report.is_dir() else []
    for line in lines:
        terminalreporter.write_line(line)


def pytest_collection_finish(session):
    """Build the real API server (cold: minutes) before the first test that needs it, so the
    build is not charged to that test's timeout. Nothing is built for a run that needs no server.
    Likewise the node's Debian packages and images, when a node test is collected."""
    needs = {f for item in session.items for f in getattr(item, "fixturenames", ())}
    if "node" in needs:
        from tests.kube import prepare

        for line in prepare.prepare_node():
            _report("node-prepare-" + line.split(":")[0].replace(" ", "-"), line)
    if "coder_provider" in needs and shutil.which("go"):
        from tests.kube import server

        try:
            built = server.build(only=server.TERRAFORM_STEPS)
        except RuntimeError:
            pass  # the fixture tries again and says why
        else:
            if built.built:
                _report("coder-provider-build",
                        f"coder Terraform provider (and terraform, not on PATH) build: {built.describe()}")
    if "kube_apiserver" in needs or "node" in needs:
        from tests.kube import server

        built = server.build()
        if built.built:
            report = Path(os.environ.get("CODER_JOBS_KUBE_REPORT", tempfile.gettempdir()))
            (report / "build.txt").write_text(f"kube-apiserver build (cold or changed): {built.describe()}\n")


@pytest.fixture(scope="session")
def kube_apiserver(worker_id):
    """The real kube-apiserver (built on first use, cached), one per test process."""
    from tests.kube import server

    built = server.build()
    srv = server.KubeAPIServer().start()
    v = server.versions()
    line = (f"kube-apiserver {v['kube-apiserver']} + etcd {v['etcd']} (real, built from the Go module proxy): "
            f"{built.describe()}; started in {srv.start_seconds:.1f} s ({worker_id})")
    report = Path(os.environ.get("CODER_JOBS_KUBE_REPORT", tempfile.gettempdir()))
    (report / f"{worker_id}.txt").write_text(line + "\n")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def kube_cluster(kube_apiserver):
    from tests.kube.cluster import Cluster

    cluster = Cluster(kube_apiserver)
    yield cluster
    cluster.proxy.stop()


@pytest.fixture
def kube(kube_cluster):
    """The real Kubernetes API server, with the test namespaces emptied, no faults and an empty log."""
    return kube_cluster.reset()


# ---------------------------------------------------------------- the real node (tests/kube/node.py)


def _report(name: str, line: str) -> None:
    report = Path(os.environ.get("CODER_JOBS_KUBE_REPORT", tempfile.gettempdir()))
    (report / (re.sub(r"[^\w.-]", "-", name) + ".txt")).write_text(line + "\n")


@pytest.fixture(scope="session")
def node(worker_id):
    """One real node per machine (`./dev test` runs the node tests in one process of their own, and
    a machine-wide lock makes any other process wait for this node to go): control plane, kubelet,
    containerd and kube-proxy in their own network namespace, with the product image built from
    images/Dockerfile imported. Where the machine cannot run a node
    the tests skip with the reason, except in CI, where that is a failure."""
    from tests.kube import image
    from tests.kube import node as kube_node

    reason = kube_node.unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the node tests: {reason}")
        pytest.skip(reason)
    from tests.kube import prepare

    prepare.prepare_node()  # cached by now (collection prepared it): finds the images
    pause, product = image.build_pause(), image.build_image()
    machine_lock = kube_node.hold_the_machine()  # a second process wanting a node waits for this one's to go
    n = kube_node.Node().start()
    try:
        n.import_image(pause.archive, kube_node.PAUSE_IMAGE)
        n.image_digest = n.import_image(product.archive, NODE_IMAGE)
        v = n.report.versions
        _report("node", f"node: kubelet {v['kubelet']}, containerd {v['containerd']}, runc {v['runc']}, "
                        f"CNI plugins {v['cni-plugins']}; Ready {n.report.ready_seconds:.1f} s after start ({worker_id})")
        yield n
    finally:
        n.stop()
        machine_lock.close()


# The tag the node's pods run: the image built from images/Dockerfile, imported into containerd
# (no registry is reachable; the pods use it with imagePullPolicy Never).
NODE_IMAGE = "ghcr.io/ameideio/coder-jobs:node-test"


@pytest.fixture(scope="session")
def node_cluster(node):
    from tests.kube.cluster import Cluster

    cluster = Cluster(node)
    yield cluster
    cluster.proxy.stop()
