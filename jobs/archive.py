"""Deterministic template archives and content fingerprints.

Same files as `coder templates push` would send (BEHAVIOR.md §4): hidden path components
skipped (except `.terraform.lock.hcl`), no `.tfstate`, no tfvars files. Unlike the CLI the
archive is byte-for-byte reproducible (sorted entries, mtime 0, uid/gid 0, 0755/0644), so
coderd's upload dedup works and the fingerprint depends on content alone.

Symlinks are followed: a ConfigMap volume is a tree of symlinks into `..data/`, and the
provisioner drops symlink entries anyway.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path, PurePosixPath

SETTINGS_FILE = "coder-template.yaml"  # ours, read by the republisher, never uploaded
MAX_ARCHIVE_BYTES = 1_048_575  # the CLI's limit; the provisioner's is 4 MiB


def excluded(relpath: str) -> bool:
    *parents, name = PurePosixPath(relpath).parts
    if any(p.startswith(".") for p in parents):
        return True
    if name.startswith(".") and name != ".terraform.lock.hcl":
        return True
    if ".tfstate" in relpath:
        return True
    if not parents and name in {"terraform.tfvars", "terraform.tfvars.json", SETTINGS_FILE}:
        return True
    return name.endswith(".auto.tfvars") or name.endswith(".auto.tfvars.json")


def collect_files(root: Path) -> dict[str, bytes]:
    """Relative posix path -> content, for every file that belongs in the archive."""
    files: dict[str, bytes] = {}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if excluded(rel):
                continue
            path = Path(dirpath, name)
            if path.is_file():
                files[rel] = path.read_bytes()
    return files


def files_from_tar(data: bytes) -> dict[str, bytes]:
    """The files of an archive coderd holds (e.g. pushed by hand), with the same exclusions."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            name = member.name.lstrip("./") if member.name.startswith("./") else member.name
            if member.isfile() and not excluded(name):
                extracted = tar.extractfile(member)
                files[name] = extracted.read() if extracted else b""
    return files


def fingerprint(files: dict[str, bytes]) -> str:
    """sha256 over sorted (path, content digest) pairs: metadata and tar framing do not count."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return "sha256:" + h.hexdigest()


def build_tar(files: dict[str, bytes]) -> bytes:
    """A reproducible tar: every directory entry before its contents, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        written_dirs: set[str] = set()
        for path in sorted(files):
            parents = PurePosixPath(path).parents
            for parent in reversed(list(parents)[:-1]):  # skip "."
                d = parent.as_posix()
                if d not in written_dirs:
                    written_dirs.add(d)
                    tar.addfile(_info(d + "/", tarfile.DIRTYPE, 0o755, 0))
            content = files[path]
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(content)), io.BytesIO(content))
    return buf.getvalue()


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def archive_folder(root: Path) -> tuple[bytes, str, dict[str, bytes], list[str]]:
    """(tar bytes, fingerprint, files, problems): each problem says why it is not a template coderd
    takes. Returned, not raised, so the caller reports them with the template's other problems."""
    files = collect_files(root)
    problems = []
    if not any("/" not in p and (p.endswith(".tf") or p.endswith(".tf.json")) for p in files):
        problems.append(f"{root} is not a valid template (no .tf file at its top level)")
    data = build_tar(files)
    if len(data) > MAX_ARCHIVE_BYTES:
        problems.append(f"archive is {len(data)} bytes, more than coderd accepts ({MAX_ARCHIVE_BYTES})")
    return data, fingerprint(files), files, problems
