"""One source for "which job reads which variable" (issue 22): the settings class each job has in
the job table of jobs/cli.py. The chart's env (through chart/files/job-env.json), `--help` and the
README's tables follow it; each test here fails when one of them drifts."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jobs.cli import JOBS, _default_text, build_parser
from jobs.settings import OTHER_ENV_VARS, env_name
from tests import job_env
from tests.chart_helpers import DIGEST, deep_merge, env_of, pod_specs, rendered, subcommand
from tests.conftest import REPO

README = (REPO / "README.md").read_text()

# Read by the jobs, left to their defaults by the chart: the chart has no value for the first two, and
# passes the switches as the flags --adopt and --delete-orphans (what the RUNBOOK tells people to use).
CHART_LEAVES_DEFAULT = {"CODER_REQUEST_TIMEOUT", "REAP_PAGE_SIZE", "EXTERNAL_AUTH_ADOPT", "REAP_DELETE_ORPHANS"}
SWITCH_FLAGS = {"EXTERNAL_AUTH_ADOPT": "--adopt", "REAP_DELETE_ORPHANS": "--delete-orphans"}

# Every job on and every optional value set, so the chart sets each variable it can.
EVERYTHING: dict[str, Any] = {
    "enabled": True, "environment": "dev", "image": {"digest": DIGEST},
    "networkPolicy": {"kubernetesApi": {"cidrs": ["10.0.0.1/32"]}},
    "coder": {"admin": {"name": "Platform Admin"}},
    "syncExternalAuth": {"enabled": True, "restartDeployment": True, "adopt": True},
    "bootstrapAdmin": {"enabled": True}, "templates": {"enabled": True}, "recover": {"enabled": True},
    "doctor": {"enabled": True},
    "reap": {"enabled": True, "kubernetesChecks": True, "deleteOrphans": True, "exempt": ["platform-admin/keep-*"],
             "maxWorkspacesPerUser": 5, "maxRunningPerUser": 2,
             "rules": [{"id": "gitops", "template": "ameide-gitops", "idleAfter": "8h"}]},
}


def reads(job: str) -> list[str]:
    return [env_name(field) for field in JOBS[job].settings.model_fields]


def readers(variable: str) -> set[str]:
    return {job for job in JOBS if variable in reads(job)}


@pytest.fixture(scope="module")
def everything() -> Any:
    return rendered(deep_merge(EVERYTHING, {}))


def test_the_chart_reads_the_table_the_settings_classes_write() -> None:
    assert job_env.PATH.read_text() == job_env.text(), \
        "chart/files/job-env.json is out of date: run `.venv/bin/python -m tests.job_env` and commit it"


def test_each_job_in_the_chart_gets_exactly_the_variables_its_settings_class_reads(everything) -> None:
    workloads = everything.kind("Job") + everything.kind("CronJob")
    assert workloads
    for obj in workloads:
        job = subcommand(obj)
        assert list(env_of(obj)) == [v for v in reads(job) if v not in CHART_LEAVES_DEFAULT], obj["metadata"]["name"]
        args = next(pod_specs(obj))["containers"][0]["args"]
        for variable, flag in SWITCH_FLAGS.items():
            assert (flag in args) == (variable in reads(job)), (obj["metadata"]["name"], flag)


def test_the_variables_the_chart_leaves_to_the_jobs_are_ones_they_read() -> None:
    assert CHART_LEAVES_DEFAULT <= {v for job in JOBS for v in reads(job)}


def test_help_lists_exactly_the_variables_of_the_job() -> None:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "job")  # type: ignore[union-attr]
    for job in JOBS:
        text = sub.choices[job].format_help()
        flags = re.findall(r"\[env ([A-Z0-9_]+)\]", " ".join(text.split()))
        secrets = re.findall(r"^  ([A-Z][A-Z0-9_]+) ", text.partition("secrets (environment")[2], re.M)
        assert sorted(flags + secrets) == sorted(reads(job)), job


def test_readme_help_and_chart_name_the_same_jobs(everything) -> None:
    intro = README.partition("\n## ")[0]
    readme_jobs = re.findall(r"^\| `([a-z-]+)` \|", intro, re.M)
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "job")  # type: ignore[union-attr]
    chart_jobs = {subcommand(obj) for obj in everything.kind("Job") + everything.kind("CronJob")}
    assert readme_jobs == list(JOBS) == list(sub.choices) == list(job_env.job_env())
    assert chart_jobs == set(JOBS)


def _readme_settings() -> dict[str, tuple[str, str]]:
    table = README.partition("\n## Configuration\n")[2].partition("\n## ")[0]
    return {m[0]: (m[1].strip(), m[2].strip())
            for m in re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \| ([^|]+) \|", table, re.M)}


def test_the_readme_settings_table_says_which_jobs_read_each_variable_and_its_default() -> None:
    rows = _readme_settings()
    coder_api_jobs = readers("CODER_URL")
    variables = {v for job in JOBS for v in reads(job)}
    assert set(rows) == variables | OTHER_ENV_VARS
    for variable in variables:
        used_by, default = rows[variable]
        named = coder_api_jobs if used_by == "all Coder API jobs" else {j.strip() for j in used_by.split(",")}
        assert named == readers(variable), f"README says {variable} is read by {used_by}"
        fields = [JOBS[job].settings.model_fields[variable.lower()] for job in readers(variable)]
        if all(f.is_required() for f in fields):
            assert default == "required", variable
        elif defaults := {_default_text(f.default) for f in fields if not f.is_required() and f.default not in (None, ())}:
            [value] = defaults
            assert f"`{value}`" in default, variable
        else:
            assert "`" not in default and not default.startswith("required"), variable
