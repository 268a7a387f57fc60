"""Regenerate the three locks from pyproject.toml, with pip's own resolver and its install report.

    python images/relock.py            # add what is missing, keep every existing pin
    python images/relock.py --upgrade  # the newest versions pyproject.toml allows
    # then: ./dev test, and commit the three lock files

- images/requirements.lock        the runtime closure, the image installs it (amd64 + arm64 hashes)
- images/build-requirements.lock  the build backend (setuptools) for the coder-jobs wheel
- tests/requirements.lock         the test extra's closure, minus the runtime set, pinned to it

`./dev` installs the test venv from all three with --require-hashes, so the tests run exactly the
versions the image ships, on any day, until this script is run again. Nothing but pip is needed:
`pip install --dry-run --report` resolves without installing and records each file's sha256.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "images" / "requirements.lock"
BUILD_LOCK = ROOT / "images" / "build-requirements.lock"
TEST_LOCK = ROOT / "tests" / "requirements.lock"
PYTHON = "3.11"  # the image's Python (python:3.11-slim) and the test venv's
IMAGE_ARCHES = ("x86_64", "aarch64")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(requirements: list[str], *, arch: str | None = None, constraints: Path | None = None) -> dict[str, tuple[str, str]]:
    """name -> (version, sha256) as pip would install `requirements` (for `arch` when given,
    else for this interpreter)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--only-binary=:all:"]
        if arch:
            cmd += ["--python-version", PYTHON, "--implementation", "cp", "--abi", "cp311", "--target", tmp]
            for tag in ("manylinux_2_17", "manylinux2014", "manylinux_2_28"):
                cmd += ["--platform", f"{tag}_{arch}"]
        if constraints:
            cmd += ["-c", str(constraints)]
        subprocess.run([*cmd, *requirements], check=True, cwd=ROOT)
        out = {}
        for item in json.loads(report.read_text())["install"]:
            meta, info = item["metadata"], item["download_info"]
            sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
            if sha:  # the project itself (a local directory) has none
                out[norm(meta["name"])] = (meta["version"], sha)
        return out


def write_lock(path: Path, header: str, pins: dict[str, tuple[str, set[str]]]) -> None:
    lines = [header.rstrip(), ""]
    for name in sorted(pins):
        version, hashes = pins[name]
        lines.append(f"{name}=={version} \\")
        lines += [f"    --hash=sha256:{h} \\" for h in sorted(hashes)]
        lines[-1] = lines[-1].removesuffix(" \\")
    path.write_text("\n".join(lines) + "\n")


def pins_of(lock: Path) -> str:
    """The `name==version` lines of an existing lock, as a constraints file's text."""
    if not lock.exists():
        return ""
    return "".join(m.group(0) + "\n" for m in re.finditer(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[^\s\\;]+", lock.read_text(), re.M))


def main(argv: list[str]) -> int:
    upgrade = "--upgrade" in argv
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime_roots = project["project"]["dependencies"]
    backend = project["build-system"]["requires"]

    keep = Path(tempfile.mkdtemp()) / "keep.txt"
    keep.write_text("" if upgrade else pins_of(RUNTIME_LOCK) + pins_of(BUILD_LOCK))
    runtime: dict[str, tuple[str, set[str]]] = {}
    for arch in IMAGE_ARCHES:
        for name, (version, sha) in resolve(runtime_roots, arch=arch, constraints=keep).items():
            have = runtime.setdefault(name, (version, set()))
            if have[0] != version:
                raise SystemExit(f"{name}: {have[0]} on {IMAGE_ARCHES[0]} but {version} on {arch}")
            have[1].add(sha)
    write_lock(RUNTIME_LOCK, """\
# Runtime dependencies of the coder-jobs image and of the test venv, installed with
#   pip install --require-hashes --only-binary=:all: --no-deps -r images/requirements.lock
# Written by `python images/relock.py` (do not edit by hand): CPython 3.11 wheels for linux/amd64
# and linux/arm64 from PyPI.""", runtime)

    build = {n: (v, {h}) for n, (v, h) in resolve(backend, arch=IMAGE_ARCHES[0], constraints=keep).items()}
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pinned:
        pinned.write("".join(f"{n}=={v}\n" for n, (v, _) in [*runtime.items(), *build.items()]))
        pinned.flush()
        tests = resolve([f"{ROOT}[test]", *backend], constraints=Path(pinned.name))
    write_lock(BUILD_LOCK, """\
# Build backend for the coder-jobs wheel (the image's builder stage and the test venv's editable
# install; never in the final image). Written by `python images/relock.py`.""", build)
    test_only = {n: (v, {h}) for n, (v, h) in tests.items() if n not in runtime and n not in build}
    drift = {n: (runtime[n][0], v) for n, (v, _) in tests.items() if n in runtime and runtime[n][0] != v}
    if drift:
        raise SystemExit(f"the test extra moved runtime versions (lock, test): {drift}")
    write_lock(TEST_LOCK, """\
# What the test extra adds to the runtime set, pinned with the runtime lock as constraints, for
# CPython 3.11 on linux/amd64 (the test machines). Written by `python images/relock.py`;
# `./dev` installs it after images/requirements.lock, both with --require-hashes.""", test_only)
    print(f"{len(runtime)} runtime, {len(build)} build, {len(test_only)} test-only distributions locked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
