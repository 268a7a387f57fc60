"""Bring your own Coder templates (issue 20): the two Ameide templates stay the default; a user
turns them off and gives template folders as files in values or as ConfigMaps of their own. An
install like that publishes exactly the user's template (checked against the coderd fake)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from tests.chart_helpers import DIGEST, RELEASE, Rendered, deep_merge, env_of, pod_specs, rendered
from tests.conftest import CANARY_PASSWORD, coder_writes, run_job

BASE = {"enabled": True, "environment": "dev", "image": {"digest": DIGEST}, "networkPolicy": {"enabled": False}}
# A template as small as coderd (and the fake) accepts: one .tf file declaring the coder provider.
MAIN_TF = """terraform {
  required_providers {
    coder = {
      source = "coder/coder"
    }
  }
}

data "coder_workspace" "me" {}
"""
MINE = {"templates": {"ameide": {"enabled": False}, "files": {"team-python": {"main.tf": MAIN_TF}}}}


def republisher(r: Rendered) -> dict[str, Any]:
    return r.get("CronJob", f"{RELEASE}-republish-templates")


def mounted_tree(r: Rendered, configmaps: list[dict[str, Any]], root: Path) -> Path:
    """The job pod's /templates as the kubelet builds it from the projected volume: each listed key
    of each ConfigMap (the chart's, or `configmaps` the user created) at its path."""
    by_name = {cm["metadata"]["name"]: cm for cm in [*r.kind("ConfigMap"), *configmaps]}
    [volume] = [v for v in next(pod_specs(republisher(r)))["volumes"] if v["name"] == "templates"]
    for source in volume["projected"]["sources"]:
        cm = by_name[source["configMap"]["name"]]
        for item in source["configMap"]["items"]:
            target = root / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            if item["key"] in cm.get("data", {}):
                target.write_text(cm["data"][item["key"]])
            else:
                target.write_bytes(base64.b64decode(cm["binaryData"][item["key"]]))
    return root


def test_the_ameide_templates_are_the_default() -> None:
    r = rendered(BASE)
    assert env_of(republisher(r))["TEMPLATES"]["value"] == "ameide-dev,ameide-gitops"


def test_templates_from_values_replace_the_ameide_ones() -> None:
    r = rendered(deep_merge(BASE, MINE))
    assert env_of(republisher(r))["TEMPLATES"]["value"] == "team-python"
    assert {n for n in r.names("ConfigMap") if "template" in n} == {f"{RELEASE}-template-team-python"}


def test_templates_from_the_users_configmaps_are_mounted_by_key() -> None:
    values = deep_merge(BASE, {"templates": {"ameide": {"enabled": False}, "configMaps": [
        {"name": "team-go", "configMap": "team-go-template", "files": ["main.tf", "modules/app/main.tf"]}]}})
    r = rendered(values)
    [volume] = [v for v in next(pod_specs(republisher(r)))["volumes"] if v["name"] == "templates"]
    assert volume["projected"]["sources"] == [{"configMap": {"name": "team-go-template", "items": [
        {"key": "main.tf", "path": "team-go/main.tf"},
        {"key": "modules__app__main.tf", "path": "team-go/modules/app/main.tf"}]}}]
    assert env_of(republisher(r))["TEMPLATES"]["value"] == "team-go"


def test_both_kinds_next_to_the_ameide_templates() -> None:
    values = deep_merge(BASE, {"templates": {"files": MINE["templates"]["files"], "configMaps": [
        {"name": "team-go", "configMap": "team-go-template", "files": ["main.tf"]}]}})
    assert env_of(republisher(rendered(values)))["TEMPLATES"]["value"] == "ameide-dev,ameide-gitops,team-go,team-python"


@pytest.mark.parametrize("templates, says", [
    ({"ameide": {"enabled": False}}, "no template to publish"),
    ({"files": {"ameide-dev": {"main.tf": MAIN_TF}}}, "an Ameide template has that name"),
    ({"ameide": {"enabled": False}, "files": {"a": {"main.tf": MAIN_TF}},
      "configMaps": [{"name": "a", "configMap": "a", "files": ["main.tf"]}]}, "already given"),
    ({"ameide": {"enabled": False}, "files": {"a": {"../main.tf": MAIN_TF}}}, "segments"),
    ({"ameide": {"enabled": False}, "files": {"a": {"main.tf": MAIN_TF}}, "names": ["b"]}, "none of the templates given"),
    ({"ameide": {"enabled": False}, "files": {"New": {"main.tf": MAIN_TF}}}, "invalid propertyName 'New'"),
])
def test_what_cannot_be_published_is_refused_at_render(templates: dict[str, Any], says: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(says)):
        rendered(deep_merge(BASE, {"templates": templates}))


def job_env(r: Rendered, tmp_path: Path, coderd_url: str, configmaps: list[dict[str, Any]]) -> dict[str, str]:
    container = next(pod_specs(republisher(r)))["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(CODER_URL=coderd_url, CODER_ADMIN_PASSWORD=CANARY_PASSWORD,
               TEMPLATES_DIR=str(mounted_tree(r, configmaps, tmp_path / "templates")))
    return env


@pytest.mark.parametrize("source", ["values", "configmap"])
def test_an_install_with_only_a_users_template_publishes_only_that_template(source, coderd, tmp_path) -> None:
    if source == "values":
        values, configmaps = deep_merge(BASE, MINE), []
    else:
        values = deep_merge(BASE, {"templates": {"ameide": {"enabled": False}, "configMaps": [
            {"name": "team-python", "configMap": "team-python-template", "files": ["main.tf"]}]}})
        configmaps = [{"metadata": {"name": "team-python-template"}, "data": {"main.tf": MAIN_TF}}]
    r = rendered(values)
    v = values.get("coder", {}).get("admin", {})
    coderd.create_user(v.get("username", "admin"), v.get("email", "admin@example.com"), CANARY_PASSWORD)
    result = run_job("republish-templates", env=job_env(r, tmp_path, coderd.url, configmaps))
    assert result.rc == 0, result.output
    assert sorted(t["name"] for t in coderd.templates.values()) == ["team-python"]
    assert coder_writes(coderd)
