"""Size of the image's runtime dependency set: every package in requirements.lock, measured as
installed (the files each distribution's RECORD lists) in the current environment.

    .venv/bin/python images/deps_size.py            # table + total
    .venv/bin/python images/deps_size.py --total    # total bytes only

The environment must hold exactly the locked versions (the project venv does); a mismatch is an
error rather than a wrong number. Byte-code caches (__pycache__) are excluded, as the final image
compiles its own.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

LOCK = Path(__file__).with_name("requirements.lock")


def locked(lock: Path = LOCK) -> dict[str, str]:
    """name -> version for every `name==version` line of the lock."""
    pins = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", action="store_true", help="print the total in bytes only")
    args = parser.parse_args(argv)
    sizes = {name: installed_size(name, version) for name, version in sorted(locked().items())}
    total = sum(sizes.values())
    if args.total:
        print(total)
        return 0
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{size / 1e6:8.2f} MB  {name}=={locked()[name]}")
    print(f"{total / 1e6:8.2f} MB  total, {len(sizes)} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
