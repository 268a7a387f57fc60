"""A real kube-apiserver and etcd on 127.0.0.1, built from the Go module proxy.

The binaries come from small modules next to this file (`k8s/` requires
`k8s.io/kubernetes`, `etcd/` requires `go.etcd.io/etcd/server/v3`, `terraform/`
requires `github.com/hashicorp/terraform`); they are built on first use into
`.cache/kube/` (git-ignored) and rebuilt only when a module file or the Go
version changes. A server is started with certificates
made at start, RBAC, the default admission plugins (PodSecurity among them)
and an audit log; nothing but the API server and etcd runs (no controllers, no
kubelet), which is all the jobs talk to.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("CODER_JOBS_KUBE_CACHE", REPO / ".cache" / "kube"))
BIN = CACHE / "bin"

# The version the API server reports: `go build` alone leaves it at v0.0.0, and
# the chart's kubeVersion floor is checked against what the server says.
KUBE_VERSION = "v1.33.13"
KUBE_LDFLAGS = " ".join(
    f"-X {pkg}.{var}={val}"
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    for var, val in (("gitVersion", KUBE_VERSION), ("gitMajor", "1"), ("gitMinor", "33"),
                     ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"))
)

HELM_VERSION = "v3.18.6"
# The Terraform provider coder/coder the templates are written for (tests/test_terraform_coder.py;
# ../shared/terraform/providers-schema.json was generated from the same release).
CODER_PROVIDER_VERSION = "v2.20.0"
TERRAFORM_VERSION = "v1.11.4"  # the version tests/kube/terraform/go.mod requires

MODULES: dict[str, tuple[str | None, list[str], list[str], str]] = {
    # build step -> (module folder, packages, binaries, ldflags)
    "k8s": ("k8s", ["./cmd/kube-apiserver", "./cmd/kubectl"], ["kube-apiserver", "kubectl"], KUBE_LDFLAGS),
    # The node (tests/kube/node.py): controllers, scheduler, kubelet and kube-proxy, same version.
    "node": ("k8s", ["./cmd/kube-controller-manager", "./cmd/kube-scheduler", "./cmd/kubelet", "./cmd/kube-proxy"],
             ["kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"], KUBE_LDFLAGS),
    "etcd": ("etcd", ["."], ["etcd"], ""),
    # The helm CLI (the node's install tests): v3's cmd/helm is a main package of its own module,
    # installed at an exact version from the Go module proxy (no module folder here).
    "helm": (None, [f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"], ["helm"],
             f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
    # The coder provider, for the templates run through real Terraform; the module's root package
    # is the provider's main, so `go install` at the release gives the binary Terraform's registry
    # ships (its version comes from the module, which `go version -m` shows).
    "coder-provider": (None, [f"github.com/coder/terraform-provider-coder/v2@{CODER_PROVIDER_VERSION}"],
                       ["terraform-provider-coder"], ""),
    # Terraform itself, only where it is not on PATH (a build of ~500 CPU-seconds); the release's
    # own build sets dev=no, without which it reports 1.11.4-dev.
    "terraform": ("terraform", ["github.com/hashicorp/terraform"], ["terraform"],
                  "-X github.com/hashicorp/terraform/version.dev=no"),
}
# What tests/test_terraform_coder.py needs.
TERRAFORM_STEPS = ("coder-provider", "terraform")


@dataclass
class BuildReport:
    seconds: float = 0.0
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.built:
            return f"cached in {BIN} ({', '.join(self.cached)})"
        return f"built {', '.join(self.built)} in {self.seconds:.0f} s" + (
            f"; cached {', '.join(self.cached)}" if self.cached else "")


def _fingerprint(module: str | None, ldflags: str, packages: list[str]) -> str:
    h = hashlib.sha256()
    go_version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    h.update(go_version.encode() + ldflags.encode() + " ".join(packages).encode())
    for path in sorted((HERE / module).rglob("*") if module else []):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            h.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# What an API server alone needs (the demo): the node's binaries and helm take most of a cold
# build, and a script that only talks to the API server need not wait for them.
API_SERVER_STEPS = ("k8s", "etcd")


def _steps(only: tuple[str, ...] | None) -> dict[str, tuple[str | None, list[str], list[str], str]]:
    return {step: spec for step, spec in MODULES.items() if (only is None or step in only)
            and not (step == "terraform" and shutil.which("terraform"))}


def terraform() -> Path | None:
    """Terraform on PATH, else the one the build step made."""
    found = shutil.which("terraform")
    if found:
        return Path(found)
    return BIN / "terraform" if (BIN / "terraform").exists() else None


def needs_build(only: tuple[str, ...] | None = None) -> bool:
    """True when `build()` would compile something (a cold cache, or a module or Go changed)."""
    if shutil.which("go") is None:
        return True  # build() says why it cannot
    for step, (module, packages, binaries, ldflags) in _steps(only).items():
        stamp = CACHE / f"{step}.stamp"
        if not (stamp.exists() and stamp.read_text() == _fingerprint(module, ldflags, packages)
                and all((BIN / b).exists() for b in binaries)):
            return True
    return False


def build(only: tuple[str, ...] | None = None) -> BuildReport:
    """Build (or reuse) the Kubernetes binaries and etcd (`only`: just these MODULES steps). Safe to
    call from several processes."""
    if shutil.which("go") is None:
        raise RuntimeError("the real Kubernetes API server is built with Go, and `go` is not on PATH")
    BIN.mkdir(parents=True, exist_ok=True)
    report = BuildReport()
    started = time.monotonic()
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (pytest-xdist workers, parallel runs)
        for step, (module, packages, binaries, ldflags) in _steps(only).items():
            stamp = CACHE / f"{step}.stamp"
            fp = _fingerprint(module, ldflags, packages)
            if stamp.exists() and stamp.read_text() == fp and all((BIN / b).exists() for b in binaries):
                report.cached += binaries
                continue
            if module is None:  # package@version: `go install` into the cache
                cmd, cwd, env = ["go", "install", "-trimpath"], HERE, {**os.environ, "GOBIN": str(BIN)}
            else:
                cmd, cwd, env = ["go", "build", "-trimpath", "-o", str(BIN) + "/"], HERE / module, None
            if ldflags:
                cmd.append(f"-ldflags={ldflags}")
            proc = subprocess.run([*cmd, *packages], cwd=cwd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"building {step} failed:\n{proc.stderr[-4000:]}")
            stamp.write_text(fp)
            report.built += binaries
    report.seconds = time.monotonic() - started
    return report


def versions() -> dict[str, str]:
    api = subprocess.run([str(BIN / "kube-apiserver"), "--version"], capture_output=True, text=True).stdout.split()
    etcd = subprocess.run([str(BIN / "etcd"), "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"kube-apiserver": api[-1] if api else "?",
            "etcd": etcd[0].split()[-1] if etcd else "?"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path, sans: str = "IP:127.0.0.1,DNS:localhost") -> None:
    """A throw-away CA, a serving certificate for `sans`, and the service-account key pair."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "3", "-subj", "/CN=coder-jobs-test-ca", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName={sans}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "3", "-extfile", "san.ext", cwd=d)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


ADMIN_USER = "test-admin"  # what the tests seed and read with
JOB_USER = "coder-jobs-test"  # what a job's kubeconfig uses unless a test gives it a token


class KubeAPIServer:
    """etcd + kube-apiserver processes; `url`, `ca`, `admin_token`, `job_token`; `audit()` reads the audit log."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="coder-jobs-kube-"))
        self.admin_token = uuid.uuid4().hex
        # The jobs' own cluster-admin identity: the audit log tells their requests from the test's.
        self.job_token = uuid.uuid4().hex
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = str(self.dir / "ca.crt")
        self.audit_log = self.dir / "audit.log"
        self.procs: list[subprocess.Popen] = []
        self.start_seconds = 0.0
        self._fence = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, deadline_s: float = 120) -> KubeAPIServer:
        started = time.monotonic()
        make_certificates(self.dir)
        (self.dir / "tokens.csv").write_text(f"{self.admin_token},{ADMIN_USER},{ADMIN_USER},system:masters\n"
                                             f"{self.job_token},{JOB_USER},{JOB_USER},system:masters\n")
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        client, peer = free_port(), free_port()
        etcd = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "--name=test", f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}", f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}", "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--cert-dir={self.dir}",
            f"--tls-cert-file={self.dir / 'server.crt'}", f"--tls-private-key-file={self.dir / 'server.key'}",
            f"--token-auth-file={self.dir / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.dir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking", "--profiling=false", "--v=0",
        ])
        with self.admin() as http:
            while True:
                self._check_alive()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > deadline_s:
                    raise RuntimeError(f"kube-apiserver not ready after {deadline_s} s; logs in {self.dir}")
                time.sleep(0.1)
        self.start_seconds = time.monotonic() - started
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen([str(BIN / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True))

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                name = Path(p.args[0]).name
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        self._stop_processes()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_processes(self) -> None:
        """SIGTERM each process, newest first; SIGKILL what is still there 10 s later."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()

    def admin(self, **kw: Any) -> httpx.Client:
        """An httpx client that talks to the server directly (no proxy, no faults) as cluster-admin."""
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca), timeout=30,
                            headers={"Authorization": f"Bearer {self.admin_token}"}, **kw)

    # ------------------------------------------------------------------ audit log

    def audit_mark(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def audit(self, since: int = 0) -> list[dict]:
        """Audit events (ResponseComplete/Panic) written after `since`, in the order the server logged them.

        A fence request (a GET only this call makes) is logged after every request the caller's
        requests returned from, so the read is complete without sleeping a guessed time.
        """
        self._fence += 1
        fence = f"/api/v1/namespaces/audit-fence-{os.getpid()}-{self._fence}"
        with self.admin() as http:
            http.get(fence)
        events: list[dict] = []
        for _ in range(500):
            events = []
            with open(self.audit_log, "rb") as f:
                f.seek(since)
                for line in f:
                    if line.endswith(b"\n"):
                        events.append(json.loads(line))
            if any(e.get("requestURI") == fence for e in events):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the audit log never showed the fence request")
        return [e for e in events if e.get("requestURI") != fence and not e["requestURI"].startswith(
            "/api/v1/namespaces/audit-fence-")]



if __name__ == "__main__":
    # `./dev test` builds first, so the suite's time is the tests' own (a cold build takes minutes).
    try:
        print(f"Kubernetes binaries, etcd, helm, the coder Terraform provider and Terraform (where not on PATH): "
              f"{build().describe()}", flush=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot build the real kube-apiserver: {exc}") from None
