"""Everything a node test needs before its first test starts, each step cached:
Debian's containerd/runc/CNI plugins, the Kubernetes binaries, the pause image and the product
image built from images/Dockerfile.

    python -m tests.kube.prepare     # `./dev test` runs it as its own timed step

Run from pytest's collection too (for `./dev test tests/test_node_jobs.py`), so a cold build is never
charged to a test's timeout. A file lock makes the pytest-xdist workers take turns (apt and dpkg
allow one writer).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

from tests.kube import image, node, server


def prepare_node() -> list[str]:
    """Lines that say what was built or found, and how long it took."""
    reason = node.unavailable_reason() or image.cannot_build()
    if reason:
        return [f"node: not prepared ({reason})"]
    server.CACHE.mkdir(parents=True, exist_ok=True)
    with open(server.CACHE / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        node.install_packages()
        packages = time.monotonic() - started
        binaries = server.build()
        builds = [image.build_pause(), image.build_image()]
    return [f"node packages: {', '.join(node.DEBIAN_PACKAGES)} ready in {packages:.0f} s",
            f"node binaries: {binaries.describe()}",
            *[f"image {b.describe()}" for b in builds]]


if __name__ == "__main__":
    try:
        lines = prepare_node()
    except (RuntimeError, image.Unavailable) as exc:
        print(f"node not prepared: {exc}", flush=True)
        sys.exit(1 if os.environ.get("CI") == "true" else 0)
    for line in lines:
        print(line, flush=True)
    sys.exit(1 if os.environ.get("CI") == "true" and lines[0].startswith("node: not prepared") else 0)
