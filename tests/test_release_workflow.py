"""The release workflow (.github/workflows/release.yaml), the only way an image digest reaches the
values files (issue 20). Here it is linted with actionlint and read for what it promises; it runs
only on a release (README: "What is verified here and what only runs on release")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart_helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yaml"
ACTIONLINT_VERSION = "v1.7.12"
CACHE = ROOT / ".cache" / "actionlint" / ACTIONLINT_VERSION


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """actionlint from the Go module proxy, built once into .cache/ (git-ignored)."""
    binary = CACHE / "actionlint"
    if not binary.exists():
        go = shutil.which("go")
        if go is None:
            pytest.skip("Go is not installed: actionlint is built with `go install` from the Go module proxy")
        env = {**os.environ, "GOBIN": str(CACHE), "GOFLAGS": "-mod=mod"}
        r = subprocess.run([go, "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"],
                           env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr
    return binary


def test_actionlint_passes_on_the_release_workflow(actionlint: Path) -> None:
    r = subprocess.run([str(actionlint), "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(job: str) -> list[dict]:
    return workflow()["jobs"][job]["steps"]


def test_the_image_is_built_for_amd64_and_arm64_from_the_dockerfile_and_pushed_to_ghcr() -> None:
    [build] = [s for s in steps("image") if str(s.get("uses", "")).startswith("docker/build-push-action")]
    assert build["with"]["file"] == "images/Dockerfile" and build["with"]["push"] is True
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert workflow()["env"]["IMAGE"] == yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())["image"]["repository"]


def test_the_digest_is_signed_keyless_with_the_least_permissions() -> None:
    wf = workflow()
    assert wf["permissions"] == {}
    assert wf["jobs"]["image"]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert wf["jobs"]["pin-digest"]["permissions"] == {"contents": "write", "pull-requests": "write"}
    sign = next(s["run"] for s in steps("image") if "cosign sign" in s.get("run", ""))
    assert 'cosign sign --yes "${IMAGE}@${DIGEST}"' in sign and "cosign verify" in sign


def test_the_digest_reaches_the_values_files_through_a_pull_request(tmp_path: Path) -> None:
    """The sed the workflow runs, run here on copies of the committed values files."""
    write = next(s for s in steps("pin-digest") if "values files" in s.get("name", ""))
    digest = "sha256:" + "0123456789abcdef" * 4
    chart = tmp_path / "chart"
    shutil.copytree(ROOT / "chart", chart, ignore=shutil.ignore_patterns("files", "templates"))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", write["run"]], cwd=tmp_path, env={**os.environ, "DIGEST": digest},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for env in ("dev", "staging", "production"):
        assert yaml.safe_load((chart / f"values-{env}.yaml").read_text())["image"]["digest"] == digest
    assert any(str(s.get("uses", "")).startswith("peter-evans/create-pull-request") for s in steps("pin-digest"))


def test_every_action_is_pinned_by_a_commit_sha_with_its_tag_beside_it() -> None:
    """A tag can be moved under a workflow that may push and sign; a commit SHA cannot."""
    uses = re.findall(r"^\s*(?:- )?uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.M)
    assert len(uses) >= 7
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), f"not pinned by a commit SHA: {action}"
        assert re.match(r"\s+# v\d+\.\d+\.\d+\b", comment), f"{action}: no `# vX.Y.Z` naming the pinned release"
