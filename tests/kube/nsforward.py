"""TCP forwarding between two network namespaces, without a route between them.

    python tests/kube/nsforward.py LISTEN_NS LISTEN_ADDR:PORT CONNECT_NS CONNECT_ADDR:PORT [...]

Each group of four is one mapping. A namespace is a path (`/run/netns/NAME`, `/proc/PID/ns/net`) or
`-` for the namespace this process started in. The node's network namespace has no interface that
leads out of it, so the tests reach its API server (and its pods reach the coderd fake on the
test's 127.0.0.1) only through this process: every thread enters the namespace it needs with
setns(2), which Linux applies per thread, so one process can listen in one and connect in another.

Prints `ready` once every listener is bound. Each further line on stdin is one more mapping (the
same four words), answered `ready` or an error line; it exits when stdin closes (its parent went
away).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_HOME = os.open("/proc/self/ns/net", os.O_RDONLY)  # before any thread moves


def enter(ns: str) -> None:
    """Move the calling thread into network namespace `ns`."""
    fd = _HOME if ns == "-" else os.open(ns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        if fd != _HOME:
            os.close(fd)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _serve(listener: socket.socket, connect_ns: str, target: tuple[str, int]) -> None:
    enter(connect_ns)  # every socket this thread creates from now on lives there
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _listen(listen_ns: str, addr: tuple[str, int], ready: threading.Barrier, out: list) -> None:
    try:
        enter(listen_ns)
        out.append(socket.create_server(addr))
    except OSError as exc:
        out.append(exc)
    finally:
        ready.wait()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def add(listen_ns: str, listen: str, connect_ns: str, connect: str) -> str | None:
    """Start one mapping; the error, if its listener cannot be bound."""
    # Bind in a short-lived thread, so the listener's namespace never leaks to another socket.
    ready = threading.Barrier(2)
    bound: list = []
    threading.Thread(target=_listen, args=(listen_ns, address(listen), ready, bound), daemon=True).start()
    ready.wait()
    if isinstance(bound[0], OSError):
        return f"cannot listen on {listen} in {listen_ns}: {bound[0]}"
    threading.Thread(target=_serve, args=(bound[0], connect_ns, address(connect)), daemon=True).start()
    return None


def main(argv: list[str]) -> int:
    if len(argv) % 4:
        print(__doc__, file=sys.stderr)
        return 2
    for i in range(0, len(argv), 4):
        error = add(*argv[i:i + 4])
        if error:
            print(error, flush=True)
            return 1
    print("ready", flush=True)
    for line in sys.stdin:  # until the parent closes our stdin
        words = line.split()
        error = add(*words) if len(words) == 4 else f"expected four words, got {line!r}"
        print(error or "ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
