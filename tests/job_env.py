"""Writes chart/files/job-env.json: which variables each job reads, from the settings classes of
jobs/cli.py's job table. The chart gives each job exactly these (coder-jobs.env), so "which job
reads which variable" is decided in one place. tests/test_job_env.py fails when the file drifts;
`.venv/bin/python -m tests.job_env` rewrites it."""

from __future__ import annotations

import json
from pathlib import Path

from jobs.cli import JOBS
from jobs.settings import env_name

PATH = Path(__file__).resolve().parent.parent / "chart" / "files" / "job-env.json"
NOTE = "Generated from jobs/cli.py's job table by `python -m tests.job_env`; do not edit."


def job_env() -> dict[str, list[str]]:
    """job -> the variables its settings class reads, in field order."""
    return {name: [env_name(field) for field in job.settings.model_fields] for name, job in JOBS.items()}


def text() -> str:
    return json.dumps({"note": NOTE, "jobs": job_env()}, indent=2) + "\n"


if __name__ == "__main__":
    PATH.write_text(text())
    print(f"wrote {PATH}")
