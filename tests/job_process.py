"""`python -m jobs` as its own process, without paying for its imports every time.

Each job the tests run is a real, separate process: its own pid, environment, working directory,
stdout and stderr pipes, signal handlers and exit status. What it skips is importing the third-party
libraries again: 0.3-0.5 CPU-seconds a job (pydantic, structlog, httpx, and the kubernetes package
for the jobs that use it), times several hundred runs. Measured back to back on this 2-core
machine, the non-node suite took 1022 s with the zygote and 1363 s without it (issue 22).

So each pytest worker starts one *zygote*: a single-threaded Python process that imports those
libraries (never our `jobs` package, which every job imports afresh) and then forks one child per
job. The child replaces its environment, working directory and standard streams, resets the
signals the zygote uses, and runs `jobs` as `python -m jobs` would (`runpy`, `SystemExit`, atexit,
flushed streams). `tests/test_job_process.py` pins that a child and a plain `python -m jobs`
answer alike.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Imported once in the zygote. Only libraries: `jobs` itself is imported by each child.
PRELOAD = ("httpx", "tenacity", "structlog", "yaml", "pydantic", "pydantic_settings", "kubernetes.config")


class TimeoutExpired(subprocess.TimeoutExpired):
    """Raised by `JobProcess.communicate`, so code written for `Popen` catches it unchanged."""


class JobProcess:
    """A started job: `pid`, `send_signal`, `kill`, `communicate(timeout)` and `returncode`,
    the parts of `subprocess.Popen` the tests use."""

    def __init__(self, conn: socket.socket, pid: int, out_fd: int, err_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn
        self._fds = {out_fd: bytearray(), err_fd: bytearray()}
        self._out_fd, self._err_fd = out_fd, err_fd
        self._open = {out_fd, err_fd}
        self._status = b""

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # exited and reaped already: as Popen.send_signal, nothing to do
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Read both streams to their end and the exit status, as `Popen.communicate` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for fd in self._open:
                sel.register(fd, selectors.EVENT_READ)
            if self.returncode is None:
                sel.register(self._conn, selectors.EVENT_READ)
            while self._open or self.returncode is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutExpired(f"coder-jobs (pid {self.pid})", timeout or 0)
                for key, _ in sel.select(left):
                    if key.fileobj is self._conn:
                        chunk = self._conn.recv(4096)
                        self._status += chunk
                        if not chunk or self._status.endswith(b"\n"):
                            sel.unregister(self._conn)
                            self._conn.close()
                            self.returncode = int(self._status or b"-9")
                        continue
                    fd = key.fd
                    chunk = os.read(fd, 65536)
                    if chunk:
                        self._fds[fd] += chunk
                    else:
                        sel.unregister(fd)
                        os.close(fd)
                        self._open.discard(fd)
        return (self._fds[self._out_fd].decode(errors="replace"), self._fds[self._err_fd].decode(errors="replace"))

    def wait(self, timeout: float | None = None) -> int:
        self.communicate(timeout)
        assert self.returncode is not None
        return self.returncode


class Launcher:
    """The client side: one zygote per pytest worker, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="coder-jobs-zygote-"))
        self._socket = self._dir / "zygote.sock"

    def _ensure(self) -> None:
        with self._lock:
            if self._zygote is not None and self._zygote.poll() is None:
                return
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CODER_", "KUBERNETES_"))}
            env.pop("KUBECONFIG", None)
            # Its stdin is a pipe this process holds: when the worker dies, the zygote sees EOF and exits.
            self._zygote = subprocess.Popen([sys.executable, "-m", "tests.job_process", str(self._socket)],
                                            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert self._zygote.stdout is not None
            ready = self._zygote.stdout.readline()
            if ready.strip() != b"ready":
                raise RuntimeError(f"the job zygote did not start: {ready!r}")

    def start(self, argv: list[str], env: dict[str, str], cwd: Path = REPO) -> JobProcess:
        """Start `python -m jobs *argv` with exactly `env` in `cwd`."""
        self._ensure()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(str(self._socket))
            request = json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}).encode()
            socket.send_fds(conn, [len(request).to_bytes(8, "big")], [out_w, err_w])
            conn.sendall(request)
        finally:
            os.close(out_w)
            os.close(err_w)
        pid = b""
        while not pid.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise RuntimeError("the job zygote closed the connection before starting the job")
            pid += chunk
        return JobProcess(conn, int(pid), out_r, err_r)

    def run(self, argv: list[str], env: dict[str, str], timeout: float, cwd: Path = REPO) -> tuple[int, str, str]:
        proc = self.start(argv, env, cwd)
        try:
            out, err = proc.communicate(timeout)
        except TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"`coder-jobs {' '.join(argv)}` did not finish within {timeout}s:\n{out[-2000:]}\n{err[-2000:]}") from None
        assert proc.returncode is not None
        return proc.returncode, out, err

    def stop(self) -> None:
        if self._zygote is not None:
            assert self._zygote.stdin is not None
            self._zygote.stdin.close()
            try:
                self._zygote.wait(10)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
            self._zygote = None
        shutil.rmtree(self._dir, ignore_errors=True)


_launcher: Launcher | None = None


def launcher() -> Launcher:
    global _launcher
    if _launcher is None:
        _launcher = Launcher()
        atexit.register(_launcher.stop)
    return _launcher


# ---------------------------------------------------------------------------------- the zygote


def _child(argv: list[str], env: dict[str, str], cwd: str, out_fd: int, err_fd: int) -> None:
    """In the forked child: become `python -m jobs *argv`, then exit with its status."""
    # Only SIGCHLD was changed by the zygote; the rest are as the interpreter set them at start.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.closerange(3, 65536)  # what subprocess's close_fds does for a new process
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    import runpy

    sys.argv = [str(REPO / "jobs" / "__main__.py"), *argv]
    code = 0
    try:
        runpy.run_module("jobs", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # the interpreter waits for non-daemon threads at exit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def serve(path: str) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    ours = sorted(m for m in sys.modules if m.split(".")[0] in ("jobs", "fakes"))
    if ours:  # each job must import its own code afresh, as a new process does
        raise SystemExit(f"the zygote imported project code: {ours}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "parent")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(sys.stdin.fileno(), 4096):
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                    return
            elif key.data == "child":
                os.read(wake_r, 4096)
                while children:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = children.pop(pid, None)
                    if conn is not None:
                        try:
                            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                        except OSError:
                            pass
                        conn.close()
            else:
                conn, _ = listener.accept()
                size_msg, fds, _flags, _addr = socket.recv_fds(conn, 8, 2)
                size = int.from_bytes(size_msg, "big")
                data = b""
                while len(data) < size:
                    data += conn.recv(size - len(data))
                request = json.loads(data)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    try:
                        _child(request["argv"], request["env"], request["cwd"], fds[0], fds[1])
                    finally:
                        os._exit(1)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                conn.sendall(f"{pid}\n".encode())


if __name__ == "__main__":
    serve(sys.argv[1])
