"""The Coder templates against the real provider schemas.

`../shared/terraform/providers-schema.json` is `terraform providers schema -json` of the providers
the templates pin (coder/coder 2.20.0, hashicorp/kubernetes 2.38.0). Every resource, data source,
provider block, nested block and argument of every .tf file is checked against it
(tests/tf_schema.py); the checker itself is shown to name the file, the block and the argument
when a copy of a template gets an argument wrong. Without ../shared these tests skip, naming the
path they looked for.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.tf_schema import Schemas, check_tree

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO_ROOT / "chart" / "files" / "coder-templates"
SCHEMA = REPO_ROOT.parent / "shared" / "terraform" / "providers-schema.json"
TEMPLATES = ("ameide-dev", "ameide-gitops")
PINNED = {"coder/coder": "2.20.0", "hashicorp/kubernetes": "2.38.0"}  # what SCHEMA was produced from


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    if not SCHEMA.is_file():
        pytest.skip(f"provider schemas not found at {SCHEMA} (../shared is not next to the repository)")
    return Schemas(SCHEMA)


def problems(schemas: Schemas, root: Path) -> list[str]:
    return [str(p) for p in check_tree(schemas, root).problems]


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_block_and_argument_is_in_the_real_provider_schemas(schemas, template):
    assert problems(schemas, TEMPLATES_DIR / template) == []


def test_the_check_reaches_every_nesting_level(schemas):
    checked = check_tree(schemas, TEMPLATES_DIR / "ameide-dev").checked
    for deep in [(f"{CONTAINER} > env > value_from > secret_key_ref", "key"),
                 (f"{CONTAINER} > dynamic volume_mount", "mount_path"),
                 ("kubernetes_deployment_v1.workspace > spec > template > spec > dynamic volume > secret", "optional"),
                 ("kubernetes_deployment_v1.workspace > spec > template > metadata", "annotations"),
                 ("kubernetes_secret_v1.credentials", "data"),
                 ("coder_agent.main > metadata", "script"),
                 ("data.coder_external_auth.github", "id"),
                 ("provider.kubernetes", "config_path")]:
        assert deep in checked, deep


def test_the_schema_file_has_both_providers(schemas):
    for source in PINNED:
        assert schemas.provider(source) is not None, source


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_pinned_provider_ranges_include_the_checked_versions(template):
    # "~> 2.20" means >= 2.20, < 3: the schema's versions must satisfy every constraint we write.
    seen = set()
    for path in (TEMPLATES_DIR / template).rglob("*.tf"):
        for source, version in re.findall(r'source\s*=\s*"([^"]+)"\s*\n\s*version\s*=\s*"([^"]+)"', path.read_text()):
            if source not in PINNED:
                continue
            seen.add((path.parent.name, source))
            m = re.fullmatch(r"~> (\d+)\.(\d+)", version)
            assert m, f"{path}: {source} {version}: expected a '~> major.minor' constraint"
            have = tuple(int(x) for x in PINNED[source].split("."))
            assert have[0] == int(m[1]) and have[1] >= int(m[2]), f"{path}: {source} {version} excludes {PINNED[source]}"
    assert seen == {(d, s) for d in (template, "workspace") for s in PINNED}, seen


def _module_calls() -> list[tuple[str, str]]:
    out = []
    for template in TEMPLATES:
        for path in sorted((TEMPLATES_DIR / template).rglob("*.tf")):
            for name in re.findall(r'^module\s+"([^"]+)"', path.read_text(), flags=re.M):
                out.append((path.relative_to(TEMPLATES_DIR).as_posix(), name))
    return out


@pytest.mark.parametrize(("file", "module"), _module_calls())
def test_module_blocks_have_no_provider_schema(schemas, file, module):
    """Reported as skipped, with the reason: module inputs are not in any provider schema."""
    template = file.split("/")[0]
    (skipped,) = [s for s in check_tree(schemas, TEMPLATES_DIR / template).skipped
                  if s.file == file and s.block == f"module.{module}"]
    pytest.skip(str(skipped))


# -- the checker fails, naming file, block and argument --------------------------------------

CONTAINER = "kubernetes_deployment_v1.workspace > spec > template > spec > container"


def _edit(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


@pytest.fixture
def copy(tmp_path) -> Path:
    root = tmp_path / "ameide-dev"
    shutil.copytree(TEMPLATES_DIR / "ameide-dev", root)
    return root


MUTATIONS = {
    "misspelled argument": (
        "modules/workspace/main.tf", 'image_pull_policy = "IfNotPresent"', 'image_pul_policy = "IfNotPresent"',
        f"ameide-dev/modules/workspace/main.tf: {CONTAINER}: image_pul_policy: no such argument (did you mean image_pull_policy?)"),
    "argument removed in coder provider 2.x": (
        "modules/workspace/agent.tf", '  os   = "linux"\n', '  os   = "linux"\n  login_before_ready = false\n',
        "ameide-dev/modules/workspace/agent.tf: coder_agent.main: login_before_ready: no such argument"),
    "misspelled argument in a dynamic block": (
        "modules/workspace/main.tf", 'name  = "ENVBUILDER_CACHE_REPO"', 'nme  = "ENVBUILDER_CACHE_REPO"',
        f"ameide-dev/modules/workspace/main.tf: {CONTAINER} > dynamic env: nme: no such argument (did you mean name?)"),
    "computed-only argument": (
        "modules/workspace/agent.tf", '  os   = "linux"\n', '  os   = "linux"\n  init_script = "echo"\n',
        "ameide-dev/modules/workspace/agent.tf: coder_agent.main: init_script: computed-only: the provider sets it, a template cannot"),
    "required argument missing": (
        "modules/workspace/agent.tf", '  os   = "linux"\n', "",
        "ameide-dev/modules/workspace/agent.tf: coder_agent.main: os: required argument is not set"),
    "unversioned kubernetes resource": (
        "modules/workspace/main.tf", 'resource "kubernetes_secret_v1" "credentials"', 'resource "kubernetes_secret" "credentials"',
        "ameide-dev/modules/workspace/main.tf: kubernetes_secret.credentials: kubernetes_secret: superseded by "
        "kubernetes_secret_v1 (the unversioned name is deprecated in provider 3.x)"),
    "deprecated argument": (
        "modules/workspace/agent.tf", "# Seed Codex auth",
        'resource "coder_ai_task" "task" {\n  app_id = coder_agent.main.id\n}\n\n# Seed Codex auth',
        "ameide-dev/modules/workspace/agent.tf: coder_ai_task.task: app_id: deprecated"),
    "provider argument misspelled": (
        "main.tf", "  config_path = ", "  config_pth = ",
        "ameide-dev/main.tf: provider.kubernetes: config_pth: no such argument (did you mean config_path?)"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_a_wrong_argument_in_a_copy_is_reported_with_file_block_and_argument(schemas, copy, case):
    rel, old, new, expected = MUTATIONS[case]
    _edit(copy, rel, old, new)
    found = problems(schemas, copy)
    assert expected in found, "\n".join(found)
