"""republish-templates and recover against the coderd fake, run as real processes."""

from __future__ import annotations

import io
import tarfile

import pytest
import yaml

from fakes.coderd import FakeCoderd
from tests.conftest import CANARY_PASSWORD, assert_no_secret, coder_writes, run_job, run_jobs_at_once

TEMPLATES = ("ameide-dev", "ameide-gitops")


@pytest.fixture
def env(templates_env, templates):
    return {**templates_env, "TEMPLATES_DIR": str(templates)}


def state(fake: FakeCoderd) -> dict[str, dict]:
    """template name -> {template, active version, versions attached to it}."""
    with fake.lock:
        out = {}
        for t in fake.templates.values():
            versions = [v for v in fake.versions.values() if v.get("template_id") == t["id"]]
            active = fake.versions[t["active_version_id"]]
            out[t["name"]] = {"template": t, "active": active, "versions": versions}
        return out


def job_status(fake, version):
    return fake.job_status(fake.jobs[version["job_id"]])


def archive_names(fake, version) -> set[str]:
    data = fake.files[fake.jobs[version["job_id"]]["file_id"]]["data"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name for m in tar.getmembers()}


def converged(fake, env) -> dict:
    result = run_job("recover", env=env)
    assert result.rc == 0, result.output
    return state(fake)


def test_fresh_coderd_gets_both_templates_with_succeeded_versions_holding_nested_files(coderd, env):
    result = run_job("recover", env=env)

    assert result.rc == 0, result.output
    now = state(coderd)
    assert sorted(now) == list(TEMPLATES)
    for name in TEMPLATES:
        assert job_status(coderd, now[name]["active"]) == "succeeded"
        names = archive_names(coderd, now[name]["active"])
        assert {"main.tf", "modules/workspace", "modules/workspace/main.tf"} <= names
        assert "coder-template.yaml" not in names
        assert now[name]["template"]["default_ttl_ms"] == 7_200_000
        assert "test-rev" in now[name]["active"]["message"]
    assert_no_secret(result, CANARY_PASSWORD)


def test_second_run_uploads_nothing_creates_no_version_and_patches_nothing(coderd, env):
    converged(coderd, env)
    coderd.clear_log()

    result = run_job("republish-templates", env=env)

    assert result.rc == 0, result.output
    assert coder_writes(coderd) == []
    assert [a["action"] for e in result.find("plan") for a in e["actions"]] == ["nothing", "nothing"]


def test_editing_one_file_publishes_exactly_one_version_for_that_template(coderd, env, templates):
    before = converged(coderd, env)
    (templates / "ameide-dev" / "modules" / "workspace" / "main.tf").write_text(
        (templates / "ameide-dev" / "modules" / "workspace" / "main.tf").read_text() + "\n# edited\n")

    result = run_job("republish-templates", env=env)

    assert result.rc == 0, result.output
    after = state(coderd)
    assert len(after["ameide-dev"]["versions"]) == 2
    assert after["ameide-dev"]["active"]["id"] != before["ameide-dev"]["active"]["id"]
    assert job_status(coderd, after["ameide-dev"]["active"]) == "succeeded"
    assert after["ameide-gitops"]["versions"] == before["ameide-gitops"]["versions"]
    assert after["ameide-gitops"]["active"]["id"] == before["ameide-gitops"]["active"]["id"]


def test_a_settings_change_patches_the_template_without_a_new_version(coderd, env, templates):
    before = converged(coderd, env)
    settings = templates / "ameide-gitops" / "coder-template.yaml"
    settings.write_text(settings.read_text().replace("default_ttl_ms: 7200000", "default_ttl_ms: 3600000"))
    coderd.clear_log()

    result = run_job("republish-templates", env=env)

    assert result.rc == 0, result.output
    after = state(coderd)
    assert after["ameide-gitops"]["template"]["default_ttl_ms"] == 3_600_000
    assert after["ameide-gitops"]["template"]["activity_bump_ms"] == 3_600_000  # a full PATCH kept it
    assert len(after["ameide-gitops"]["versions"]) == len(before["ameide-gitops"]["versions"])
    assert [r.route for r in coder_writes(coderd)] == ["PATCH /api/v2/templates/{template}"]


def test_a_template_that_fails_to_build_exits_1_with_the_error_and_keeps_the_active_version(coderd, env, templates):
    before = converged(coderd, env)
    broken = templates / "ameide-dev" / "main.tf"
    broken.write_text(broken.read_text() + '\noutput "oops" {\n  value = var.does_not_exist\n}\n')

    result = run_job("republish-templates", env=env)

    assert result.rc == 1
    message = result.errors()[0]["event"]
    assert "ameide-dev" in message and "failed to build" in message and "Reference to undeclared input variable" in message
    error_lines = message.split("Error log lines:")[1]
    assert "does_not_exist" in error_lines  # the line terraform put the cause on, wherever it was in the log
    after = state(coderd)
    assert after["ameide-dev"]["active"]["id"] == before["ameide-dev"]["active"]["id"]


def test_a_tf_syntax_error_is_exit_2_naming_the_file_before_any_request(coderd, env, templates):
    (templates / "ameide-gitops" / "main.tf").write_text('resource "x" "y" {\n  unclosed = "\n')

    result = run_job("republish-templates", env=env)

    assert result.rc == 2
    message = result.errors()[0]["event"]
    assert "ameide-gitops" in message and "main.tf" in message
    assert coderd.log == []


def test_every_broken_template_is_named_in_one_exit_2_before_any_request(coderd, env, templates):
    (templates / "ameide-gitops" / "main.tf").write_text('resource "x" "y" {\n  a = 1\n')
    (templates / "ameide-dev" / "coder-template.yaml").write_text("display_name: [unclosed\n")

    result = run_job("republish-templates", env=env)

    assert result.rc == 2
    [message] = [e["event"] for e in result.errors()]
    assert "2 of 2 templates" in message and "nothing was written" in message
    assert "template ameide-dev: coder-template.yaml is not valid YAML at line 2, column 1" in message
    assert 'template ameide-gitops: cannot read its Terraform: main.tf:1: unclosed block resource "x" "y"' in message
    assert coderd.log == []


# -- external auth: coderd fails the import of a template naming a provider it lacks ------------
@pytest.mark.external_auth()  # a coderd started without CODER_EXTERNAL_AUTH_0_* (sync-external-auth never ran)
def test_without_the_github_provider_nothing_is_uploaded_and_the_message_says_what_to_do(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)

    result = run_job("republish-templates", env=env)

    assert result.rc == 1
    assert coderd.requests("POST", "/files$") == [] and coder_writes(coderd) == []
    per_template = [e["event"] for e in result.errors() if e.get("template")]
    assert [e["template"] for e in result.errors() if e.get("template")] == list(TEMPLATES)  # both tried
    for message in per_template:
        for part in ('"github"', "coder-external-auth-github", "sync-external-auth", "restart coderd", "RUNBOOK.md"):
            assert part in message, (part, message)
    assert "2 of 2 templates did not converge" in result.errors()[-1]["event"]
    assert coderd.api_key_count() == 0


@pytest.mark.external_auth()
def test_once_the_provider_is_configured_both_templates_converge(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    assert run_job("republish-templates", env=env).rc == 1
    coderd.external_auth_providers = ["github"]  # sync-external-auth ran, coderd restarted

    result = run_job("republish-templates", env=env)

    assert result.rc == 0, result.output
    assert sorted(state(coderd)) == list(TEMPLATES)
    assert len(coderd.versions) == 2


def test_one_broken_template_does_not_stop_the_other_and_the_exit_is_1(coderd, env, templates):
    broken = templates / "ameide-dev" / "main.tf"
    broken.write_text(broken.read_text() + '\noutput "oops" {\n  value = var.does_not_exist\n}\n')

    result = run_job("recover", env=env)

    assert result.rc == 1
    now = state(coderd)
    assert sorted(now) == ["ameide-gitops"]
    assert job_status(coderd, now["ameide-gitops"]["active"]) == "succeeded"
    assert "ameide-dev" in result.errors()[0]["event"] and result.errors()[0]["template"] == "ameide-dev"
    assert "1 of 2 templates did not converge: ameide-dev" in result.errors()[-1]["event"]


def test_each_rerun_after_a_failed_import_adds_at_most_one_version_per_template(coderd, env, templates):
    converged(coderd, env)
    broken = templates / "ameide-dev" / "main.tf"
    broken.write_text(broken.read_text() + '\noutput "oops" {\n  value = var.does_not_exist\n}\n')
    counts = []
    for _ in range(3):
        assert run_job("republish-templates", env=env).rc == 1
        counts.append({name: len(t["versions"]) for name, t in state(coderd).items()})

    assert counts == [{"ameide-dev": 2, "ameide-gitops": 1}, {"ameide-dev": 3, "ameide-gitops": 1},
                      {"ameide-dev": 4, "ameide-gitops": 1}]
    assert len(coderd.versions) == 4 + 1  # no orphans either


# -- full variable state ---------------------------------------------------------------------
def active_values(fake, name: str) -> dict[str, str]:
    return {v["name"]: v["value"] for v in state(fake)[name]["active"]["variables"]}


def test_deleting_a_variables_line_resets_it_to_its_default_and_doctor_sees_the_drift_first(coderd, env, templates):
    settings = templates / "ameide-dev" / "coder-template.yaml"
    original = settings.read_text()
    settings.write_text(original.replace("environment: dev", "environment: staging"))
    converged(coderd, env)
    assert active_values(coderd, "ameide-dev")["environment"] == "staging"
    settings.write_text(original.replace("  environment: dev\n", ""))  # the line deleted: the default is dev

    doctor = run_job("doctor", env=env)
    assert doctor.rc == 1
    [drift] = doctor.find("drift template/ameide-dev")
    assert drift["variables"] == ["environment"]

    result = run_job("republish-templates", env=env)

    assert result.rc == 0, result.output
    assert active_values(coderd, "ameide-dev")["environment"] == "dev"
    sent = coderd.requests("POST", "/templateversions$")[-1].json()["user_variable_values"]
    assert {v["name"] for v in sent} == set(active_values(coderd, "ameide-dev"))  # every declared variable
    assert run_job("doctor", env=env).rc == 0


def test_doctor_reports_a_variable_value_changed_on_coderd_by_hand(coderd, env):
    converged(coderd, env)
    with coderd.lock:  # as if someone pushed the same files by hand with --variable environment=staging
        for var in state(coderd)["ameide-gitops"]["active"]["variables"]:
            if var["name"] == "environment":
                var["value"] = "staging"

    result = run_job("doctor", env=env)

    assert result.rc == 1
    [drift] = result.find("drift template/ameide-gitops")
    assert drift["variables"] == ["environment"]


# -- organization ---------------------------------------------------------------------------
def test_an_unknown_organization_is_exit_2_naming_the_variable_before_any_write(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)

    result = run_job("republish-templates", env={**env, "CODER_ORGANIZATION": "no-such-org"})

    assert result.rc == 2
    [error] = result.errors()
    assert "CODER_ORGANIZATION" in error["event"] and "no-such-org" in error["event"]
    assert coder_writes(coderd) == []
    assert coderd.api_key_count() == 0  # it had logged in, and logged out again


def test_database_reset_is_healed_by_recover(coderd, env):
    converged(coderd, env)
    coderd.reset_database()

    result = run_job("recover", env=env)

    assert result.rc == 0, result.output
    assert sorted(state(coderd)) == list(TEMPLATES)
    assert [u["username"] for u in coderd.users.values() if u["username"] != "prebuilds"] == ["platform-admin"]


def test_a_template_pushed_by_hand_with_identical_content_is_adopted(coderd, env, templates):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    # What `coder templates push` would send: real mtimes and uids, no marker in the message.
    from jobs.archive import collect_files

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("modules", "modules/workspace"):  # the CLI writes directory entries too
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o775, 1_750_000_000
            tar.addfile(info)
        for path, data in sorted(collect_files(templates / "ameide-dev").items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.uid, info.mode = len(data), 1_750_000_000, 1000, 0o664
            tar.addfile(info, io.BytesIO(data))
    import httpx

    token = coderd.token_for("platform-admin")
    with httpx.Client(base_url=coderd.url, headers={"Coder-Session-Token": token}) as http:
        file_id = http.post("/api/v2/files", content=buf.getvalue(), headers={"Content-Type": "application/x-tar"}).json()["hash"]
        version = http.post("/api/v2/organizations/default/templateversions", json={
            "storage_method": "file", "provisioner": "terraform", "file_id": file_id, "message": "Uploaded from the CLI",
            # the values an operator's `coder templates push --variable ...` would give: the folder's own
            "user_variable_values": [{"name": k, "value": str(v)} for k, v in sorted(yaml.safe_load(
                (templates / "ameide-dev" / "coder-template.yaml").read_text())["variables"].items())]}).json()
        coderd.wait_idle()
        settings = {"display_name": "Ameide Dev", "default_ttl_ms": 7200000, "activity_bump_ms": 3600000,
                    "description": "Ameide monorepo workspace built by envbuilder from .devcontainer/coder, with code-server and Codex.",
                    "icon": "/icon/code.svg"}
        assert http.post("/api/v2/organizations/default/templates",
                         json={"name": "ameide-dev", "template_version_id": version["id"], **settings}).status_code == 201
    coderd.clear_log()

    result = run_job("republish-templates", "--templates", "ameide-dev", env=env)

    assert result.rc == 0, result.output
    [action] = [a for e in result.find("plan") for a in e["actions"]]
    assert action["action"] == "nothing" and "adopted" in action["reason"], action
    assert coder_writes(coderd) == []


def test_dry_run_lists_the_plan_per_template_and_writes_nothing(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)

    result = run_job("--dry-run", "republish-templates", env=env)

    assert result.rc == 0, result.output
    plans = [a for e in result.find("plan") for a in e["actions"]]
    assert [(a["action"], a["target"]) for a in plans] == [
        ("create-template", "template/ameide-dev"), ("create-template", "template/ameide-gitops")]
    assert coder_writes(coderd) == []


def test_dry_run_recover_on_a_fresh_coderd_writes_nothing(coderd, env):
    result = run_job("--dry-run", "recover", env=env)

    assert result.rc == 0, result.output
    actions = [a["action"] for e in result.find("plan") for a in e["actions"]]
    assert actions == ["create-first-user", "create-template", "create-template"]
    assert coderd.writes() == []


def test_recover_converges_through_random_5xx_without_duplicates(coderd, env):
    coderd.random_errors(0.3, seed=7)

    result = run_job("recover", env={**env, "CODER_READY_TIMEOUT": "60"}, timeout=180)

    coderd.clear_faults()
    assert result.rc == 0, result.output
    now = state(coderd)
    assert sorted(now) == list(TEMPLATES)
    for name in TEMPLATES:
        assert len(now[name]["versions"]) == 1, name
    assert len(coderd.versions) == 2  # no orphaned duplicates either
    assert len([u for u in coderd.users.values() if u["username"] != "prebuilds"]) == 1


def test_doctor_reports_drift_and_health(coderd, env, templates):
    assert run_job("doctor", env=env).rc == 1  # fresh: no first user
    converged(coderd, env)
    coderd.clear_log()
    healthy = run_job("doctor", env=env)
    assert healthy.rc == 0, healthy.output
    assert coder_writes(coderd) == []
    (templates / "ameide-dev" / "main.tf").write_text((templates / "ameide-dev" / "main.tf").read_text() + "\n# drift\n")
    drift = run_job("doctor", env=env)
    assert drift.rc == 1 and drift.find("drift template/ameide-dev")


def test_templates_dir_that_does_not_exist_is_exit_2_before_any_request(coderd, env):
    result = run_job("republish-templates", env={**env, "TEMPLATES_DIR": "/nonexistent/templates"})

    assert result.rc == 2
    assert "TEMPLATES_DIR" in result.errors()[0]["event"]
    assert coderd.log == []


def test_two_republishers_racing_create_each_template_once(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    results = run_jobs_at_once("republish-templates", env=env)

    assert [r.rc for r in results] == [0, 0], [r.output for r in results]
    assert sorted(state(coderd)) == list(TEMPLATES)
    assert len(coderd.templates) == 2


def test_a_session_token_is_used_and_never_printed(coderd, env):
    coderd.create_user("platform-admin", "platform-admin@ameide.io", CANARY_PASSWORD)
    token = coderd.token_for("platform-admin")
    token_env = {k: v for k, v in env.items() if k not in ("CODER_ADMIN_PASSWORD", "CODER_ADMIN_EMAIL")}

    result = run_job("republish-templates", env={**token_env, "CODER_SESSION_TOKEN": token})

    assert result.rc == 0, result.output
    assert coderd.requests("POST", "/users/login$") == []
    assert_no_secret(result, token)
