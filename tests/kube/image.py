"""The product image and the pod sandbox image, built here for the node in the test loop.

Docker Hub is out of reach, so `images/Dockerfile` gets its base through its `PYTHON_IMAGE`
build argument: a stand-in for python:3.11-slim made from Debian's own packages (debootstrap).
Every other step is the real Dockerfile, run by buildah. The results are docker archives that
`ctr -n k8s.io images import` takes as they are.

Everything lives in `.cache/image/` (git-ignored): buildah's own storage, the archives and one
stamp per image; an image is rebuilt only when its inputs change. A file lock lets
pytest-xdist workers and parallel runs call the builders at once.

`python -m tests.kube.image` builds (or finds) all three and prints times and sizes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("CODER_JOBS_IMAGE_CACHE", REPO / ".cache" / "image"))
# overlay needs a kernel and a filesystem that allow it; STORAGE_DRIVER=vfs (buildah's own
# variable) works anywhere, at the cost of a full copy per layer.
DRIVER = os.environ.get("STORAGE_DRIVER", "overlay")
STORAGE = CACHE / f"storage-{DRIVER}"

BASE_REF = "localhost/coder-jobs-base:bookworm"
IMAGE_REF = "localhost/coder-jobs:test"
PAUSE_REF = "localhost/pause:test"

APT_PACKAGES = ("buildah", "runc", "debootstrap")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What python:3.11-slim offers the Dockerfile: `python`, pip, venv, a CA bundle, groupadd on PATH.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
# Run in the debootstrapped tree before it becomes an image. Without EXTERNALLY-MANAGED, Debian's
# pip installs into /usr/local as the official image's does; the apt lists, caches and docs are
# what a slim image leaves out; resolv.conf is the host's and buildah provides its own.
BASE_FINISH = """\
set -eu
ln -sf python3 usr/bin/python
rm -f usr/lib/python3.11/EXTERNALLY-MANAGED etc/resolv.conf
rm -rf var/lib/apt/lists/* var/cache/apt/* usr/share/doc/* usr/share/man/* usr/share/locale/*
"""
# The files the product image is made of (`.dockerignore` lets nothing else into the context).
IMAGE_INPUTS = ("images/Dockerfile", ".dockerignore", "images/requirements.lock",
                "images/build-requirements.lock", "pyproject.toml", "README.md")
# The host's bundle (this machine may reach PyPI through a TLS-intercepting proxy) replaces the
# base's during the build's RUN steps only: it is bind-mounted, never part of a layer.
HOST_CA = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
BASE_CA = "/etc/ssl/certs/ca-certificates.crt"


class Unavailable(RuntimeError):
    """This machine cannot build the images (the message says why); tests skip, CI fails."""


@dataclasses.dataclass(frozen=True)
class ImageBuild:
    reference: str
    image_id: str  # sha256:... of the image config, as buildah's storage names it
    archive: Path | None  # docker archive for `ctr -n k8s.io images import`; None for the base
    size_bytes: int  # the layers, uncompressed
    archive_bytes: int
    seconds: float  # how long the build took (when cached, the build that made the cached image)
    cached: bool

    def describe(self) -> str:
        how = f"built in {self.seconds:.0f} s" if self.seconds else "built"
        how += ", cached" if self.cached else ""
        archive = f", archive {self.archive_bytes / 1e6:.0f} MB" if self.archive else ""
        return f"{self.reference}: {how}, {self.size_bytes / 1e6:.0f} MB{archive} ({self.image_id[:19]})"


# ---------------------------------------------------------------------------------- machine

def cannot_build() -> str | None:
    """Why this machine cannot build the images, or None. As root on Debian, installs what is missing."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        return "building images needs Linux namespaces"
    if os.geteuid() != 0:
        return "building images with buildah and debootstrap here needs root"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [p for p in APT_PACKAGES if shutil.which(p, path=path) is None]
    if missing:
        if shutil.which("apt-get") is None:
            return f"{', '.join(missing)} missing, and no apt-get to install them"
        failure = _apt_install(missing)
        if failure and _apt_update():  # a fresh machine may have no package lists yet
            failure = _apt_install(missing)
        if failure:
            return failure
    if shutil.which("go") is None:
        return "the pause image is built with Go, and `go` is not on PATH"
    return None


def _apt_install(packages: list[str]) -> str | None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                       capture_output=True, text=True, env=env)
    return None if r.returncode == 0 else f"apt-get install {' '.join(packages)} failed: {r.stderr[-500:]}"


def _apt_update() -> bool:
    return subprocess.run(["apt-get", "update"], capture_output=True).returncode == 0


def _buildah(*args: str) -> list[str]:
    return ["buildah", "--root", str(STORAGE), "--runroot", str(CACHE / "run"), "--storage-driver", DRIVER, *args]


def buildah(*args: str, check: bool = True) -> str:
    """buildah on the cache's own storage; its stdout."""
    r = subprocess.run(_buildah(*args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args[:2])} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r.stdout


@contextlib.contextmanager
def rootfs(reference: str) -> Iterator[Path]:
    """A working container of `reference`, mounted read-write: its root filesystem, until exit."""
    container = buildah("from", "--pull=never", "--quiet", reference).strip()
    try:
        yield Path(buildah("mount", container).strip())
    finally:
        buildah("rm", container)


def run(reference: str, *command: str, user: str = "10001:10001") -> subprocess.CompletedProcess:
    """`command` in a container of `reference` with no network: (returncode, stdout, stderr)."""
    container = buildah("from", "--pull=never", "--quiet", reference).strip()
    try:
        # OCI isolation (runc): chroot isolation cannot take the container off the network.
        return subprocess.run(_buildah("run", "--isolation", "oci", "--network", "none", "--user", user, container,
                                       "--", *command), capture_output=True, text=True, timeout=300)
    finally:
        buildah("rm", container)


# ---------------------------------------------------------------------------------- cache

def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _files(paths: list[Path]) -> list[bytes]:
    return [str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() for p in sorted(paths)]


def _image_id(reference: str) -> str | None:
    out = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", reference, check=False).strip()
    return f"sha256:{out}" if out else None


def _cached(name: str, reference: str, fingerprint: str, exported: bool) -> ImageBuild | None:
    """The stamped build of `name` if its fingerprint matches and its image (and archive) still exist."""
    stamp = CACHE / f"{name}.json"
    try:
        saved = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    archive = CACHE / f"{name}.tar"
    if saved.get("fingerprint") != fingerprint or _image_id(reference) != saved.get("image_id"):
        return None
    if exported and not archive.exists():
        return None
    return ImageBuild(reference, saved["image_id"], archive if exported else None, saved["size_bytes"],
                      archive.stat().st_size if exported else 0, saved.get("seconds", 0.0), True)


def _build(name: str, reference: str, fingerprint: str, make: Callable[[], None], exported: bool = True) -> ImageBuild:
    """Find `name` in the cache, or run `make` (which commits `reference`) and export it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time: xdist workers, parallel runs
        started = time.monotonic()
        found = _cached(name, reference, fingerprint, exported)
        if found:
            return found
        make()
        # A rebuilt image takes the tag; the old one, untagged, would only take space.
        buildah("rmi", "--prune", check=False)
        image_id = _image_id(reference)
        assert image_id, f"{reference} not in storage after its build"
        manifest = json.loads(json.loads(buildah("inspect", "--type", "image", reference))["Manifest"])
        size = sum(layer["size"] for layer in manifest["layers"])
        archive = CACHE / f"{name}.tar"
        if exported:
            partial = archive.with_suffix(".tar.partial")
            partial.unlink(missing_ok=True)
            buildah("push", "--quiet", reference, f"docker-archive:{partial}:{reference}")
            partial.rename(archive)
        seconds = time.monotonic() - started
        (CACHE / f"{name}.json").write_text(json.dumps(
            {"fingerprint": fingerprint, "image_id": image_id, "size_bytes": size, "seconds": seconds}))
        return ImageBuild(reference, image_id, archive if exported else None, size,
                          archive.stat().st_size if exported else 0, seconds, False)


def _require() -> None:
    reason = cannot_build()
    if reason:
        raise Unavailable(reason)


# ---------------------------------------------------------------------------------- images

def build_base() -> ImageBuild:
    """localhost/coder-jobs-base:bookworm: Debian bookworm minbase + Python 3.11, in buildah's storage."""
    _require()
    recipe = json.dumps([DEBIAN_MIRROR, BASE_PACKAGES, BASE_ENV, BASE_FINISH]).encode()
    return _build("base", BASE_REF, _digest(recipe), _make_base, exported=False)


def _make_base() -> None:
    tree = CACHE / "base-rootfs"
    shutil.rmtree(tree, ignore_errors=True)
    try:
        r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                            "bookworm", str(tree), DEBIAN_MIRROR], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
        subprocess.run(["sh", "-c", BASE_FINISH], cwd=tree, check=True)
        container = buildah("from", "--quiet", "scratch").strip()
        try:
            mount = buildah("mount", container).strip()
            # tar keeps owners, modes, setuid bits and hard links; `buildah copy` would not.
            pack = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-C", mount, "-xpf", "-"], stdin=pack.stdout, check=True)
            if pack.wait() != 0:
                raise RuntimeError("packing the debootstrapped tree failed")
            buildah("umount", container)
            buildah("config", *[a for env in BASE_ENV for a in ("--env", env)], "--cmd", "python3",
                    "--label", "org.opencontainers.image.description=Debian stand-in for python:3.11-slim (tests)",
                    container)
            buildah("commit", "--quiet", "--rm", container, BASE_REF)
        except BaseException:
            buildah("rm", container, check=False)
            raise
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def revision() -> str:
    r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "test"


def build_image() -> ImageBuild:
    """localhost/coder-jobs:test from images/Dockerfile on the stand-in base, as a docker archive."""
    base = build_base()
    inputs = [REPO / p for p in IMAGE_INPUTS] + [p for p in (REPO / "jobs").rglob("*")
                                                  if p.is_file() and "__pycache__" not in p.parts]
    fingerprint = _digest(base.image_id.encode(), *_files(inputs))

    def make() -> None:
        # The revision label names the commit the image was built from, which is not an input: a
        # commit that changes none of the image's files reuses the image.
        buildah("bud", "--quiet", "--isolation", "oci", "--network", "host", "--pull=never", "--layers=false",
                "--volume", f"{HOST_CA}:{BASE_CA}:ro",
                "--build-arg", f"PYTHON_IMAGE={BASE_REF}", "--build-arg", f"VERSION={project_version()}",
                "--build-arg", f"REVISION={revision()}",
                "-f", str(REPO / "images" / "Dockerfile"), "-t", IMAGE_REF, str(REPO))

    return _build("coder-jobs", IMAGE_REF, fingerprint, make)


def build_pause() -> ImageBuild:
    """localhost/pause:test: the static Go program in tests/kube/pause as the only layer."""
    _require()
    module = HERE / "pause"
    go = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    fingerprint = _digest(go.encode(), *_files([module / "go.mod", *module.glob("*.go")]))

    def make() -> None:
        binary = CACHE / "pause"
        r = subprocess.run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."], cwd=module,
                           capture_output=True, text=True, env={**os.environ, "CGO_ENABLED": "0"})
        if r.returncode != 0:
            raise RuntimeError(f"building tests/kube/pause failed:\n{r.stderr[-4000:]}")
        container = buildah("from", "--quiet", "scratch").strip()
        try:
            buildah("copy", "--chmod", "0755", container, str(binary), "/pause")
            buildah("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container)
            buildah("commit", "--quiet", "--rm", container, PAUSE_REF)
        except BaseException:
            buildah("rm", container, check=False)
            raise

    return _build("pause", PAUSE_REF, fingerprint, make)


def archive_config(archive: Path) -> dict:
    """What a container of the image in a docker archive starts with (User, Env, Entrypoint, Labels...)."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest[0]["Config"]))["config"]  # type: ignore[arg-type]


def main() -> int:
    try:
        for build in (build_base, build_pause, build_image):
            print(build().describe(), flush=True)
    except Unavailable as exc:
        print(f"images not built: {exc}", flush=True)
        return 1 if os.environ.get("CI") == "true" else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
