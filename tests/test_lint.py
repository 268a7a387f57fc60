"""ruff and mypy are part of the suite (`./dev test`): a lint or type error fails it like a bug."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    r = run("ruff", "check", ".")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_strict_finds_no_error_in_the_jobs_package() -> None:
    r = run("mypy", "--strict", "jobs")  # and [tool.mypy] in pyproject.toml, which says strict too
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
