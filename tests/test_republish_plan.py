"""The republisher's pure parts: archives, fingerprints and the plan."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from jobs.archive import build_tar, collect_files, files_from_tar, fingerprint
from jobs.errors import ConfigError
from jobs.models import ProvisionerJobLog, Template, TemplateVersion
from jobs.republish import RemoteTemplate, external_auth_message, failed_build_message, missing_providers, plan, retry_name
from jobs.template_source import load_templates


def make_template(root: Path, name: str = "demo", files: dict[str, str] | None = None, settings: str | None = None) -> Path:
    folder = root / name
    for rel, text in (files or {"main.tf": "terraform {}\n", "modules/ws/main.tf": "locals {}\n"}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    if settings is not None:
        (folder / "coder-template.yaml").write_text(settings)
    return folder


def template_model(**over) -> Template:
    base = dict(id="t1", name="demo", active_version_id="v1", display_name="", description="", icon="",
                default_ttl_ms=0, activity_bump_ms=3600000, allow_user_cancel_workspace_jobs=False)
    return Template.model_validate({**base, **over})


def test_archive_skips_what_coder_push_skips(tmp_path):
    folder = make_template(tmp_path, files={
        "main.tf": "x", ".terraform/providers/p": "x", ".git/HEAD": "x", ".terraform.lock.hcl": "x",
        "terraform.tfstate": "x", "terraform.tfvars": "x", "mod/a.auto.tfvars": "x", "mod/.hidden": "x",
        "coder-template.yaml": "display_name: x\n",
    })
    assert sorted(collect_files(folder)) == [".terraform.lock.hcl", "main.tf"]


def test_archive_is_reproducible_and_lists_directories_before_their_files(tmp_path):
    folder = make_template(tmp_path)
    first, second = build_tar(collect_files(folder)), build_tar(collect_files(folder))
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.isdir()) for m in members] == [
        ("main.tf", False), ("modules", True), ("modules/ws", True), ("modules/ws/main.tf", False)]
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(0, 0, 0)}
    assert {m.mode for m in members if m.isdir()} == {0o755} and {m.mode for m in members if m.isfile()} == {0o644}


def test_fingerprint_ignores_tar_metadata_but_not_content(tmp_path):
    files = {"main.tf": b"a", "m/x.tf": b"b"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # as a human's `coder templates push` would: real mtimes
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid = len(data), 1700000000, 1000
            tar.addfile(info, io.BytesIO(data))
    assert fingerprint(files_from_tar(buf.getvalue())) == fingerprint(files)
    assert fingerprint({**files, "main.tf": b"changed"}) != fingerprint(files)


def test_symlinked_configmap_layout_is_followed(tmp_path):
    data = tmp_path / "vol" / "..2026_11_27"
    (data / "modules").mkdir(parents=True)
    (data / "main.tf").write_text("x")
    (data / "modules" / "m.tf").write_text("y")
    vol = tmp_path / "vol"
    (vol / "..data").symlink_to(data.name)
    (vol / "main.tf").symlink_to("..data/main.tf")
    (vol / "modules").symlink_to("..data/modules")
    assert collect_files(vol) == {"main.tf": b"x", "modules/m.tf": b"y"}


def test_missing_template_is_created(tmp_path):
    [local] = load_templates(tmp_path, None) if make_template(tmp_path) else []
    [action] = plan(local, RemoteTemplate(None))
    assert action.kind == "create-template"


def test_identical_content_and_settings_is_nothing(tmp_path):
    make_template(tmp_path)
    [local] = load_templates(tmp_path, None)
    remote = RemoteTemplate(template_model(), local.fingerprint, local.settings.variables_fingerprint())
    assert [a.kind for a in plan(local, remote)] == ["nothing"]


def test_hand_pushed_identical_content_is_adopted(tmp_path):
    make_template(tmp_path)
    [local] = load_templates(tmp_path, None)
    [action] = plan(local, RemoteTemplate(template_model(), local.fingerprint, None))
    assert action.kind == "nothing" and "adopted" in action.reason


def test_changed_content_publishes_a_version(tmp_path):
    make_template(tmp_path)
    [local] = load_templates(tmp_path, None)
    [action] = plan(local, RemoteTemplate(template_model(), "sha256:" + "0" * 64, local.settings.variables_fingerprint()))
    assert action.kind == "publish-version"


VARS_TF = ('variable "namespace" {\n  default = "coder-workspaces"\n}\n'
           'variable "environment" {\n  type = string\n  default = "dev"\n}\n'
           'variable "replicas" {\n  default = 2\n}\n')


def test_changed_variables_publish_a_version(tmp_path):
    make_template(tmp_path, files={"main.tf": VARS_TF}, settings="variables:\n  namespace: other\n")
    [local] = load_templates(tmp_path, None)
    [action] = plan(local, RemoteTemplate(template_model(), local.fingerprint, "sha256:" + "1" * 64))
    assert action.kind == "publish-version" and "variable" in action.reason


def test_every_declared_variable_is_sent_with_the_files_value_else_its_default(tmp_path):
    make_template(tmp_path, files={"main.tf": VARS_TF}, settings="variables:\n  environment: staging\n")
    [local] = load_templates(tmp_path, None)
    assert local.variable_values() == [{"name": "environment", "value": "staging"},
                                       {"name": "namespace", "value": "coder-workspaces"},
                                       {"name": "replicas", "value": "2"}]


def test_deleting_a_line_changes_the_fingerprint_back_to_the_defaults(tmp_path):
    make_template(tmp_path, files={"main.tf": VARS_TF}, settings="variables:\n  environment: staging\n")
    [staging] = load_templates(tmp_path, None)
    (tmp_path / "demo" / "coder-template.yaml").write_text("variables: {}\n")
    [restored] = load_templates(tmp_path, None)
    assert staging.variables_fingerprint() != restored.variables_fingerprint()
    assert {"name": "environment", "value": "dev"} in restored.variable_values()
    # ...and a changed default counts too: the fingerprint covers the full effective set
    (tmp_path / "demo" / "main.tf").write_text(VARS_TF.replace('"dev"', '"test"'))
    [changed_default] = load_templates(tmp_path, None)
    assert changed_default.variables_fingerprint() != restored.variables_fingerprint()


def test_variable_values_on_coderd_that_differ_from_the_folder_publish_a_version(tmp_path):
    make_template(tmp_path, files={"main.tf": VARS_TF})
    [local] = load_templates(tmp_path, None)
    values = {"namespace": "coder-workspaces", "environment": "staging", "replicas": "2"}
    [action] = plan(local, RemoteTemplate(template_model(), local.fingerprint, None, values))
    assert action.kind == "publish-version" and action.details["variables"] == ["environment"]
    same = {**values, "environment": "dev"}
    assert [a.kind for a in plan(local, RemoteTemplate(template_model(), local.fingerprint, None, same))] == ["nothing"]
    redacted = {**same, "environment": None}  # a sensitive value coderd will not show cannot be told apart
    assert [a.kind for a in plan(local, RemoteTemplate(template_model(), local.fingerprint, None, redacted))] == ["nothing"]


@pytest.mark.parametrize("settings, problem", [
    ("variables:\n  enviroment: staging\n", "variables.enviroment: the template declares no such variable"),
    ("variables: {}\n", "variables.token: required"),
])
def test_variables_the_template_does_not_declare_or_requires_are_a_config_error(tmp_path, settings, problem):
    make_template(tmp_path, files={"main.tf": VARS_TF + 'variable "token" {\n  sensitive = true\n}\n'}, settings=settings)
    with pytest.raises(ConfigError, match=problem):
        load_templates(tmp_path, None)


def test_the_external_auth_providers_a_template_uses_are_read_from_every_module(tmp_path):
    make_template(tmp_path, files={"main.tf": "terraform {}\n", "modules/ws/main.tf":
                                   'data "coder_external_auth" "gh" {\n  id = "github"\n}\n'})
    [local] = load_templates(tmp_path, None)
    assert local.external_auth == ("github",)
    assert missing_providers(local, []) == ["github"] and missing_providers(local, ["github"]) == []


def test_the_external_auth_message_names_the_provider_the_secret_the_job_and_the_runbook():
    text = external_auth_message("ameide-dev", ["github"], [], written="nothing was uploaded")
    for part in ('"github"', "coder-external-auth-github", "sync-external-auth", "restart coderd", "RUNBOOK.md",
                 "nothing was uploaded", "configured: none"):
        assert part in text


def test_a_failed_build_is_reported_with_every_error_line_not_only_the_tail():
    version = TemplateVersion.model_validate({"id": "v", "name": "cj-1", "job": {
        "id": "j", "status": "failed", "error": "terraform plan: Reference to undeclared input variable"}})
    logs = [ProvisionerJobLog(id=1, stage="Planning", output="Error: Reference to undeclared input variable",
                              log_level="error")]
    logs += [ProvisionerJobLog(id=i, stage="Cleaning Up", output=f"line {i}", log_level="info") for i in range(2, 40)]
    text = failed_build_message("ameide-dev", version, logs)
    assert "Reference to undeclared input variable" in text.split("Error log lines:")[1]
    assert "line 39" not in text


def test_changed_settings_update_only_settings(tmp_path):
    make_template(tmp_path, settings="display_name: Demo\ndefault_ttl_ms: 7200000\n")
    [local] = load_templates(tmp_path, None)
    remote = RemoteTemplate(template_model(), local.fingerprint, local.settings.variables_fingerprint())
    [action] = plan(local, remote)
    assert action.kind == "update-settings" and action.details["changes"] == ["default_ttl_ms", "display_name"]


@pytest.mark.parametrize("settings, field", [
    ("description: " + "x" * 200, "description"),
    ("default_ttl_ms: -1", "default_ttl_ms"),
    ("unknown_field: 1", "unknown_field"),
    ("display_name: [unclosed", "not valid YAML"),
])
def test_invalid_settings_file_is_a_config_error_naming_the_field(tmp_path, settings, field):
    make_template(tmp_path, settings=settings)
    with pytest.raises(ConfigError, match=field):
        load_templates(tmp_path, None)


def test_a_yaml_error_in_the_settings_file_is_one_line_naming_file_line_column_and_problem(tmp_path):
    make_template(tmp_path, settings="display_name: Demo\ndescription: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_templates(tmp_path, None)
    message = str(err.value)
    assert "\n" not in message and "^" not in message  # not PyYAML's multi-line drawing
    assert "template demo: coder-template.yaml is not valid YAML at line 3, column 1:" in message
    assert "(while parsing a flow sequence at line 2)" in message


def test_every_problem_of_every_template_is_reported_at_once(tmp_path):
    make_template(tmp_path, "broken-tf", files={
        "main.tf": "".join("\n" for _ in range(51)) + 'resource "x" "y" {\n  a = 1\n',  # opened on line 52
        "extra.tf": 'variable "v" {\n  default = local.x\n}\n'})
    make_template(tmp_path, "broken-settings", settings="default_ttl_ms: -1\nnope: 1\n")
    make_template(tmp_path, "fine")
    make_template(tmp_path, "no_underscores")
    with pytest.raises(ConfigError) as err:
        load_templates(tmp_path, None)
    assert str(err.value).startswith("3 of 4 templates")  # raised before anything could be written
    problems = err.value.problems
    assert [p.split(":")[0] for p in problems] == ["template broken-settings"] * 2 + ["template broken-tf"] * 2 + [
        "template no_underscores"]
    assert "default_ttl_ms" in problems[0] and "nope" in problems[1]
    assert "extra.tf" in problems[2] and 'main.tf:52: unclosed block resource "x" "y"' in problems[3]


def test_a_folder_without_top_level_tf_is_not_a_template(tmp_path):
    make_template(tmp_path, files={"modules/x.tf": "x"})
    with pytest.raises(ConfigError, match="not a valid template"):
        load_templates(tmp_path, None)


def test_templates_naming_a_missing_folder_is_a_config_error(tmp_path):
    make_template(tmp_path)
    with pytest.raises(ConfigError, match="nope"):
        load_templates(tmp_path, ["demo", "nope"])


def test_a_failed_builds_name_is_retried_under_the_next_free_attempt_number_not_the_clock():
    assert retry_name("cj-abc-def", {"cj-abc-def"}) == "cj-abc-def-2"
    assert retry_name("cj-abc-def", {"cj-abc-def", "cj-abc-def-2", "cj-abc-def-3"}) == "cj-abc-def-4"


def test_a_brand_new_template_that_fails_to_build_does_not_claim_an_active_version():
    version = TemplateVersion.model_validate({"id": "v1", "name": "cj-1", "job": {"id": "j", "status": "failed", "error": "boom"}})

    new = failed_build_message("ameide-dev", version, [], new_template=True)
    existing = failed_build_message("ameide-dev", version, [])

    assert "no template was created" in new and "active version" not in new
    assert "the active version is unchanged" in existing
