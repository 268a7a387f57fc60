"""The chart's environment reaches the workspace: chart values -> template ConfigMap ->
coder-template.yaml as the republisher loads it (jobs.template_source) -> the template variables it
sends (`user_variable_values`) -> AMEIDE_ENVIRONMENT / WORKSPACE_NAMESPACE in the workspace.

Rendered with the real Helm engine (helm-python-sdk), read back with the jobs' own loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.template_source import TemplateSettings, load_settings
from tests.chart_helpers import CHART_DIR, RELEASE, TEMPLATES_DIR, deep_merge, env_values, render

TEMPLATES = ("ameide-dev", "ameide-gitops")
SETTINGS = "coder-template.yaml"


def settings_from_render(objects: list[dict[str, Any]], template: str, tmp_path: Path) -> TemplateSettings:
    """coder-template.yaml of one template as the republish pod sees it, loaded by the job's loader."""
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{RELEASE}-template-{template}"]
    folder = tmp_path / template
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SETTINGS).write_text(cm["data"][SETTINGS])
    return load_settings(folder, template)


def sent(settings: TemplateSettings) -> dict[str, str]:
    """The user_variable_values the republisher sends, as a dict."""
    return {v["name"]: v["value"] for v in settings.variable_values()}


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_staging_render_sends_environment_staging(template, tmp_path):
    objects = render(env_values("staging", enable=True))
    assert sent(settings_from_render(objects, template, tmp_path)) == {
        "environment": "staging",
        "namespace": "coder-workspaces",
        "service_account_name": "coder-workspace",
        "codex_enabled": "true",
    }


@pytest.mark.parametrize("env", ["staging", "production"])
def test_environment_and_workspace_namespace_follow_the_chart(env, tmp_path):
    values = deep_merge(env_values(env, enable=True), {"workspaces": {"namespace": f"ws-{env}",
                                                                     "serviceAccount": {"name": "dev-sa"},
                                                                     "codex": {"enabled": False}}})
    for template in TEMPLATES:
        variables = sent(settings_from_render(render(values), template, tmp_path / template))
        assert variables == {"environment": env, "namespace": f"ws-{env}", "service_account_name": "dev-sa",
                             "codex_enabled": "false"}


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_sent_variables_are_the_template_variables_that_set_ameide_environment(template):
    """environment -> var.environment -> AMEIDE_ENVIRONMENT (pod env and agent env); namespace likewise."""
    from tests.test_coder_templates import _env, _root, _workspace_module

    call = _root(template).modules["workspace"]
    assert call["environment"] == "${var.environment}" and call["namespace"] == "${var.namespace}"
    assert _env(template)["AMEIDE_ENVIRONMENT"] == "${var.environment}"
    assert _workspace_module(template).resource("coder_agent", "main")["env"]["AMEIDE_ENVIRONMENT"] == "${var.environment}"
    settings = yaml.safe_load((TEMPLATES_DIR / template / SETTINGS).read_text())
    assert set(settings["variables"]) <= set(_root(template).variables)


def chart_default_codex() -> bool:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())["workspaces"]["codex"]["enabled"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_dev_with_the_chart_s_default_codex_renders_the_file_byte_for_byte(template):
    """The committed file holds the dev environment with the chart's defaults, so such a render
    changes nothing; the dev values' own switches (Codex) are the only difference."""
    values = deep_merge(env_values("dev", enable=True), {"workspaces": {"codex": {"enabled": chart_default_codex()}}})
    (cm,) = [o for o in render(values) if o["metadata"]["name"] == f"{RELEASE}-template-{template}"]
    assert cm["data"][SETTINGS] == (TEMPLATES_DIR / template / SETTINGS).read_text()


@pytest.mark.parametrize("template", TEMPLATES)
def test_codex_is_off_in_the_chart_default_variables_tf_and_the_raw_folder_alike_and_dev_turns_it_on_by_values(
        template, tmp_path):
    from jobs.archive import collect_files
    from jobs.terraform_files import inspect

    declared = {v.name: v.default for v in inspect(collect_files(TEMPLATES_DIR / template)).variables}
    committed = load_settings(TEMPLATES_DIR / template, template)
    assert chart_default_codex() is False
    assert declared["codex_enabled"] == "false" == sent(committed)["codex_enabled"]
    # Every chart-owned value the raw folder sends is the template's own default: pushed as is, the
    # folder publishes what variables.tf says.
    assert {k: declared[k] for k in sent(committed)} == sent(committed)
    assert sent(settings_from_render(render(env_values("dev", enable=True)), template, tmp_path))["codex_enabled"] == "true"


def test_only_the_variables_block_changes(tmp_path):
    objects = render(env_values("production", enable=True))
    (cm,) = [o for o in objects if o["metadata"]["name"] == f"{RELEASE}-template-ameide-dev"]
    committed = (TEMPLATES_DIR / "ameide-dev" / SETTINGS).read_text()
    head = committed[: committed.index("\nvariables:\n")]
    assert cm["data"][SETTINGS].startswith(head + "\nvariables:\n")
    rendered, original = yaml.safe_load(cm["data"][SETTINGS]), yaml.safe_load(committed)
    assert {k: v for k, v in rendered.items() if k != "variables"} == {k: v for k, v in original.items() if k != "variables"}
    assert rendered["variables"]["environment"] == "production"


def test_a_variables_block_that_is_not_last_fails_the_render(tmp_path):
    import shutil

    import helm_python as helm

    from tests.chart_helpers import CHART_DIR, NAMESPACE

    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    path = chart / "files" / "coder-templates" / "ameide-dev" / SETTINGS
    moved = "allow_user_cancel_workspace_jobs: false\n"
    path.write_text(path.read_text().replace(moved, "") + moved)
    with helm.Chart.load(chart) as edited, pytest.raises(helm.HelmError, match="must be the last top-level key"):
        edited.render(env_values("staging", enable=True), name=RELEASE, namespace=NAMESPACE)
