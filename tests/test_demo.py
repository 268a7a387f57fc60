"""The README's demo command keeps working: the whole lifecycle against the fakes, exit 0."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.no_conformance  # the demo's fakes live in its own process; this checks its outcome
def test_the_demo_runs_the_whole_lifecycle():
    proc = subprocess.run([sys.executable, "-m", "fakes.demo"], cwd=REPO, capture_output=True, text=True, timeout=300)

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("PreSync: sync-external-auth", "First sync", "nothing changed", "A template edit", "Database reset", "Reaper pass"):
        assert step in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "demo finished" in proc.stdout
