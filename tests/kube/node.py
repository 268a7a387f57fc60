"""A real single-node cluster inside a network namespace the tests create.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy (all v1.33.13,
built by tests/kube/server.py from the Go module proxy) and containerd + runc + the CNI bridge
plugin (Debian's packages) run in the network namespace `coder-jobs-node`, which has a loopback, a
bridge that carries the node's IP, and the pods' bridge: no interface and no route lead out of it.
The test process reaches the API server, and pods reach the coderd fake on the test's 127.0.0.1,
only through tests/kube/nsforward.py.

One node per machine: containerd's state and the kubelet's cgroups are machine-wide, so a node
left over by a killed run is torn down before a new one starts, and pytest-xdist keeps every node
test in one worker (the `node` xdist group).

The kubelet writes machine-wide sysctls when they differ from what it wants (vm.overcommit_memory,
kernel.panic, ...). containerd and the kubelet run in a private mount namespace in which those
files are covered with copies that already hold the kubelet's values, so the machine's are never
touched; the same mount namespace lets containerd see the volumes the kubelet mounts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tests.kube.server import ADMIN_USER, AUDIT_POLICY, BIN, JOB_USER, KubeAPIServer, free_port, make_certificates

NETNS = "coder-jobs-node"
NETNS_PATH = Path("/run/netns") / NETNS
ROOT = Path("/var/lib/coder-jobs-node")  # containerd's images and the kubelet's pods
RUN = Path("/run/coder-jobs-node")  # sockets and containerd's state
NODE_NAME = "coder-jobs-node"
NODE_IP = "10.200.0.1"  # on a port-less bridge inside the namespace only
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_PORT = 6443  # inside the namespace
CNI_BIN = Path("/usr/lib/cni")
PAUSE_IMAGE = "localhost/pause:test"
# What the kubelet sets machine-wide unless they already hold these values (container_manager_linux).
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
# jq: RUNBOOK's commands use it, and the node tests run them as written.
DEBIAN_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "iproute2", "util-linux", "jq")
NODE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")


class NodeUnavailable(Exception):
    """This machine cannot run a node (not root, no Debian packages): tests skip with this reason."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "a node needs root (network namespace, containerd, cgroups)"
    if not Path("/sys/fs/cgroup").exists():
        return "no cgroup filesystem"
    return None


def hold_the_machine() -> IO[str]:
    """An exclusive lock on the machine's one node, held until the returned file is closed."""
    RUN.parent.mkdir(parents=True, exist_ok=True)
    lock = open(Path("/run") / "coder-jobs-node.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def install_packages() -> None:
    """Debian's containerd, runc and CNI plugins, when missing (part of `./dev test` on a fresh machine)."""
    missing = [p for p in DEBIAN_PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise NodeUnavailable(f"no apt-get to install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, capture_output=True)


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()
        return out[0] if out else "?"
    return {
        "kubelet": first([str(BIN / "kubelet"), "--version"]).split()[-1],
        "containerd": first(["containerd", "--version"]).split()[2],
        "runc": first(["runc", "--version"]).split()[-1],
        "cni-plugins": subprocess.run(["dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins"],
                                      capture_output=True, text=True).stdout or "?",
    }


def _netns_inode() -> int:
    return os.stat(NETNS_PATH).st_ino


def _ns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _pids_in_netns() -> list[int]:
    if not NETNS_PATH.exists():
        return []
    out = subprocess.run(["ip", "netns", "pids", NETNS], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _kubepods_cgroups() -> list[Path]:
    found = []
    for controller in Path("/sys/fs/cgroup").iterdir():
        root = controller / "kubepods"
        if root.is_dir():
            found += sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [root]
    return found


def teardown_leftovers() -> None:
    """Remove what a node (this run's, or a killed run's) leaves on the machine: its processes,
    its pods' processes (by their cgroups), the namespace, cgroups, sockets and files."""
    for _ in range(3):
        pids = _pids_in_netns()
        for cg in _kubepods_cgroups():
            procs = cg / "cgroup.procs"
            if procs.exists():
                pids += [int(p) for p in procs.read_text().split()]
        pids = [p for p in set(pids) if p != os.getpid()]
        if not pids:
            break
        _kill_pids(pids)
        time.sleep(0.2)
    for cg in _kubepods_cgroups():
        try:
            cg.rmdir()
        except OSError:
            pass
    if NETNS_PATH.exists():
        subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True)
    shutil.rmtree(RUN, ignore_errors=True)
    shutil.rmtree(ROOT, ignore_errors=True)


@dataclass
class NodeReport:
    start_seconds: float = 0.0
    ready_seconds: float = 0.0  # from start to the node's Ready condition
    versions: dict[str, str] = field(default_factory=dict)


class Node(KubeAPIServer):
    """The node's control plane and node components. As a KubeAPIServer (url, ca, admin(),
    audit()), the same Cluster helper the API-server tests use works on it."""

    def __init__(self) -> None:
        super().__init__()
        self.holder: subprocess.Popen | None = None
        self.forwarder: subprocess.Popen | None = None
        self.node_token = uuid.uuid4().hex
        self.components_token = uuid.uuid4().hex
        self.report = NodeReport()
        self.exposed: dict[int, int] = {}  # host port on 127.0.0.1 -> port on NODE_IP
        self.names: dict[int, str] = {}  # pid -> component, for its log
        self.image_digest = ""  # of the product image, once imported (tests/conftest.py)

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                name = self.names.get(p.pid, "?")
                tail = (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    # ------------------------------------------------------------------ start

    def start(self, deadline_s: float = 180) -> Node:  # type: ignore[override]
        reason = unavailable_reason()
        if reason:
            raise NodeUnavailable(reason)
        started = time.monotonic()
        teardown_leftovers()
        self._network()
        self._holder()
        sans = ",".join([f"IP:{ip}" for ip in ("127.0.0.1", NODE_IP, "10.96.0.1")] + [
            f"DNS:{n}" for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                 "kubernetes.default.svc.cluster.local")])
        make_certificates(self.dir, sans)
        (self.dir / "tokens.csv").write_text(
            f"{self.admin_token},{ADMIN_USER},{ADMIN_USER},system:masters\n"
            f"{self.job_token},{JOB_USER},{JOB_USER},system:masters\n"
            f'{self.node_token},system:node:{NODE_NAME},kubelet,"system:nodes,system:masters"\n'
            f"{self.components_token},system:kube-controller-manager,components,system:masters\n")
        (self.dir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        self._control_plane()
        self._forward_api()
        self._wait("kube-apiserver /readyz", lambda http: http.get("/readyz").status_code == 200, deadline_s)
        self._containerd()
        self._spawn_in("kubelet", [f"--config={self._kubelet_config()}", f"--kubeconfig={self._kubeconfig('kubelet', self.node_token)}",
                                   f"--root-dir={ROOT / 'kubelet'}", f"--cert-dir={ROOT / 'kubelet' / 'pki'}",
                                   f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", "--v=1"])
        self._spawn_in("kube-proxy", [f"--config={self._proxy_config()}", "--v=1"])
        self._wait("the node's Ready condition", self._node_ready, deadline_s - (time.monotonic() - started))
        self.report.ready_seconds = time.monotonic() - started
        self._wait("the default ServiceAccount", lambda http: http.get(
            "/api/v1/namespaces/default/serviceaccounts/default").status_code == 200, 60)
        self.report.start_seconds = self.start_seconds = time.monotonic() - started
        self.report.versions = versions()
        self.check_confined()
        return self

    def _network(self) -> None:
        subprocess.run(["ip", "netns", "add", NETNS], check=True, capture_output=True)
        for cmd in (["link", "set", "lo", "up"],
                    # This kernel has no dummy links; a bridge with no ports carries an address just as well.
                    ["link", "add", "node0", "type", "bridge"],
                    ["addr", "add", f"{NODE_IP}/32", "dev", "node0"],
                    ["link", "set", "node0", "up"]):
            subprocess.run(["ip", "-n", NETNS, *cmd], check=True, capture_output=True)
        routes = subprocess.run(["ip", "-n", NETNS, "route", "show", "default"], capture_output=True, text=True).stdout
        if routes.strip():
            raise RuntimeError(f"the node's namespace has a default route: {routes}")

    def _holder(self) -> None:
        """A process that holds the node's mount namespace (a slave of the machine's, so nothing
        mounted inside shows outside), with the kubelet's sysctls shielded."""
        RUN.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["nsenter", f"--net={NETNS_PATH}", "unshare", "--mount", "--propagation", "slave", "sleep", "infinity"],
            start_new_session=True, stdin=subprocess.DEVNULL)
        self._await_exec(self.holder.pid, "sleep")
        shield = RUN / "sysctl"
        shield.mkdir(exist_ok=True)
        for key, value in KUBELET_SYSCTLS.items():
            copy = shield / key.replace("/", ".")
            copy.write_text(value + "\n")
            subprocess.run(["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "mount", "--bind", str(copy),
                            f"/proc/sys/{key}"], check=True, capture_output=True)

    def _await_exec(self, pid: int, name: str, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if Path(os.readlink(f"/proc/{pid}/exe")).name == name:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{name} (pid {pid}) did not start")

    def _spawn_in(self, name: str, args: list[str], binary: str | None = None) -> None:
        """Start a node process inside the namespace, and prove it is there before going on."""
        assert self.holder is not None
        path = binary or str(BIN / name)
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(["nsenter", f"--net={NETNS_PATH}", f"--mount=/proc/{self.holder.pid}/ns/mnt",
                                 "--", path, *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        self.names[proc.pid] = name
        self._await_exec(proc.pid, Path(path).name)
        if _ns_of(proc.pid) != f"net:[{_netns_inode()}]":
            self.stop()
            raise RuntimeError(f"{name} is not inside the node's network namespace: stopped everything")

    def check_confined(self) -> None:
        """Every process of the node (and what containerd started) is inside the namespace."""
        inside = f"net:[{_netns_inode()}]"
        for proc in [*self.procs, self.holder]:
            if proc is not None and proc.poll() is None and _ns_of(proc.pid) != inside:
                raise RuntimeError(f"pid {proc.pid} ({proc.args}) left the node's network namespace")
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                comm = (pid_dir / "comm").read_text().strip()
                if comm in ("kubelet", "kube-proxy", "containerd") or comm.startswith("containerd-shim"):
                    if os.readlink(pid_dir / "ns" / "net") != inside:
                        raise RuntimeError(f"{comm} (pid {pid_dir.name}) runs outside the node's network namespace")
            except (OSError, ValueError):
                continue

    def _kubeconfig(self, name: str, token: str) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "node", "cluster": {"server": f"https://127.0.0.1:{API_PORT}",
                                                       "certificate-authority": self.ca}}],
            "users": [{"name": "node", "user": {"token": token}}],
            "contexts": [{"name": "node", "context": {"cluster": "node", "user": "node"}}]}))
        return path

    def _control_plane(self) -> None:
        client, peer = free_port(), free_port()  # free here; the namespace's ports are all free
        etcd = f"http://127.0.0.1:{client}"
        self._spawn_in("etcd", [
            "--name=node", f"--data-dir={self.dir / 'etcd'}", f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}", f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=node=http://127.0.0.1:{peer}", "--unsafe-no-fsync", "--log-level=warn"])
        self._spawn_in("kube-apiserver", [
            f"--etcd-servers={etcd}", "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
            f"--secure-port={API_PORT}", f"--cert-dir={self.dir}",
            f"--tls-cert-file={self.dir / 'server.crt'}", f"--tls-private-key-file={self.dir / 'server.key'}",
            f"--client-ca-file={self.ca}",
            f"--token-auth-file={self.dir / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.dir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--kubelet-preferred-address-types=InternalIP",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking", "--profiling=false", "--v=0"])
        components = self._kubeconfig("components", self.components_token)
        self._spawn_in("kube-controller-manager", [
            f"--kubeconfig={components}", f"--authentication-kubeconfig={components}",
            f"--authorization-kubeconfig={components}", "--leader-elect=false", "--secure-port=0",
            f"--service-account-private-key-file={self.dir / 'sa.key'}", f"--root-ca-file={self.ca}",
            "--use-service-account-credentials=false", "--controllers=*", "--v=1"])
        self._spawn_in("kube-scheduler", [
            f"--kubeconfig={components}", f"--authentication-kubeconfig={components}",
            f"--authorization-kubeconfig={components}", "--leader-elect=false", "--secure-port=0", "--v=1"])

    def expose(self, host_port: int) -> tuple[str, int]:
        """Make a server on the test's 127.0.0.1:`host_port` reachable from pods at the returned
        (NODE_IP, port)."""
        if host_port not in self.exposed:
            node_port = 20000 + len(self.exposed)
            self._forward(str(NETNS_PATH), f"{NODE_IP}:{node_port}", "-", f"127.0.0.1:{host_port}")
            self.exposed[host_port] = node_port
        return NODE_IP, self.exposed[host_port]

    def _forward(self, *mapping: str) -> None:
        assert self.forwarder is not None and self.forwarder.stdin and self.forwarder.stdout
        self.forwarder.stdin.write((" ".join(mapping) + "\n").encode())
        self.forwarder.stdin.flush()
        line = self.forwarder.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the namespace forwarder refused {mapping}: {line!r}")

    def _forward_api(self) -> None:
        """The forwarder process, with the API server's port on the test's 127.0.0.1."""
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.forwarder = subprocess.Popen([sys.executable, str(Path(__file__).with_name("nsforward.py"))],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        assert self.forwarder.stdout is not None
        if self.forwarder.stdout.readline().strip() != b"ready":  # no mapping yet
            raise RuntimeError("the namespace forwarder did not start")
        self._forward("-", f"127.0.0.1:{self.port}", str(NETNS_PATH), f"127.0.0.1:{API_PORT}")

    def _containerd(self) -> None:
        cni = self.dir / "cni"
        cni.mkdir()
        (cni / "10-pods.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "pods",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(RUN / "ipam")}}]}))
        config = self.dir / "containerd.toml"
        config.write_text(f"""\
version = 2
root = "{ROOT / 'containerd'}"
state = "{RUN / 'containerd'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{ROOT / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM drops CAP_SYS_RESOURCE: without it runc fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
""")
        self._spawn_in("containerd", [f"--config={config}"], binary=shutil.which("containerd") or "containerd")
        deadline = time.monotonic() + 30
        while not Path(self.containerd_socket).exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not open its socket; log in {self.dir}")
            time.sleep(0.1)

    @property
    def containerd_socket(self) -> str:
        return str(RUN / "containerd.sock")

    def _kubelet_config(self) -> Path:
        (self.dir / "resolv.conf").write_text("# no nameserver: nothing inside the node resolves names\n")
        path = self.dir / "kubelet.yaml"
        path.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_IP, "readOnlyPort": 0, "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False, "resolvConf": str(self.dir / "resolv.conf"),
            # The machine's disk and memory are shared with everything else: never evict a test's pod.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "rotateCertificates": False,
            "registerNode": True, "podCIDR": POD_CIDR, "maxPods": 50,
        }))
        return path

    def _proxy_config(self) -> Path:
        path = self.dir / "kube-proxy.yaml"
        path.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig("kube-proxy", self.components_token))},
            "mode": "iptables", "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR,
            # Conntrack limits are machine-wide: leave them as they are.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256"}))
        return path

    def _wait(self, what: str, ready, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self.admin() as http:
            while True:
                self._check_alive()
                try:
                    if ready(http):
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"waited {seconds:.0f} s for {what}; logs in {self.dir}")
                time.sleep(0.2)

    def _node_ready(self, http: httpx.Client) -> bool:
        r = http.get(f"/api/v1/nodes/{NODE_NAME}")
        if r.status_code != 200:
            return False
        return any(c["type"] == "Ready" and c["status"] == "True" for c in r.json()["status"].get("conditions", []))

    # ------------------------------------------------------------------ images

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.holder is not None
        return subprocess.run(["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--", "ctr",
                               "--address", self.containerd_socket, "--namespace", "k8s.io", *args],
                              check=check, capture_output=True, text=True)

    def import_image(self, archive: Path | str, *refs: str) -> str:
        """Import a docker archive into containerd's k8s.io namespace, tag it as `refs` and as
        `<repository>@<digest>` of each (no registry is reachable: pods use these with
        imagePullPolicy Never, and a digest reference finds nothing unless it was tagged so).
        Returns the manifest digest, what a chart value `image.digest` pins."""
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        imported = manifest[0]["RepoTags"][0]  # the name ctr gives the image it imports
        self.ctr("images", "import", str(archive))
        listed = self.ctr("images", "ls", f"name=={imported}").stdout.splitlines()
        digest = next(word for word in listed[1].split() if word.startswith("sha256:"))
        for ref in (imported, *refs):
            repository = ref.rsplit(":", 1)[0]
            for name in {ref, f"{repository}@{digest}"} - {imported}:
                self.ctr("images", "tag", "--force", imported, name)
        return digest

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        if self.forwarder is not None and self.forwarder.poll() is None:
            self.forwarder.kill()
            self.forwarder.wait()
        self._stop_processes()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        teardown_leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    # By hand: python -m tests.kube.node  (starts a node, prints how long it took, stops it)
    install_packages()
    node = Node().start()
    try:
        print(f"node Ready in {node.report.ready_seconds:.1f} s: {node.report.versions}; logs in {node.dir}")
        if "--keep" in sys.argv:
            print(f"API at {node.url}, admin token {node.admin_token}, CA {node.ca}; Ctrl-C stops it")
            signal.pause()
    finally:
        node.stop()
