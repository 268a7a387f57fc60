"""Size of the image's runtime dependency set: every package in requirements.lock, measured as
installed (the files each distribution's RECORD lists).

    python images/deps_size.py            # table + total
    python images/deps_size.py --total    # total bytes only

It measures an environment that holds exactly the locked versions: the Python running it when that
one does, otherwise the project's `.venv` (which `./dev` creates and which the tests pin to the
lock), so any `python` works. Without such an environment it says so instead of printing a wrong
number. Byte-code caches (__pycache__) are excluded, as the final image compiles its own.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path

LOCK = Path(__file__).with_name("requirements.lock")
ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
# Set on the re-run inside .venv, so a .venv that does not match either cannot loop.
RERUN = "CODER_JOBS_DEPS_SIZE_RERUN"


def locked(lock: Path = LOCK) -> dict[str, str]:
    """name -> version for every `name==version` line of the lock."""
    pins = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def mismatches(pins: dict[str, str]) -> list[str]:
    """What keeps this environment from being measured: missing or other versions."""
    out = []
    for name, version in sorted(pins.items()):
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            out.append(f"{name}=={version} is not installed")
            continue
        if have != version:
            out.append(f"{name}: lock has {version}, this environment has {have}")
    return out


def installed_size(name: str, version: str) -> int:
    dist = md.distribution(name)
    if dist.version != version:
        raise SystemExit(f"{name}: lock has {version}, this environment has {dist.version}")
    total = 0
    for f in dist.files or []:
        if "__pycache__" in f.parts:
            continue
        path = Path(dist.locate_file(f))
        if path.is_file():
            total += path.stat().st_size
    return total


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", action="store_true", help="print the total in bytes only")
    args = parser.parse_args(argv)
    pins = locked()
    problems = mismatches(pins)
    if problems:
        if not os.environ.get(RERUN) and VENV_PYTHON.exists():
            sys.stdout.flush()
            os.execve(VENV_PYTHON, [str(VENV_PYTHON), str(Path(__file__).resolve()), *argv],
                      {**os.environ, RERUN: "1"})
        fix = ("run `./dev test` once to reinstall it" if os.environ.get(RERUN) else
               "there is no .venv: run `./dev test` once (it creates .venv with them)")
        print(f"deps_size: {sys.executable} does not hold the {len(pins)} locked runtime dependencies "
              f"({len(problems)} differ, e.g. {problems[0]}); {fix}, then `python images/deps_size.py` "
              "again.", file=sys.stderr)
        return 2
    sizes = {name: installed_size(name, version) for name, version in sorted(pins.items())}
    total = sum(sizes.values())
    if args.total:
        print(total)
        return 0
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{size / 1e6:8.2f} MB  {name}=={pins[name]}")
    print(f"{total / 1e6:8.2f} MB  total, {len(sizes)} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
