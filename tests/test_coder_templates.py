"""Invariants of the Coder templates shipped in chart/files/coder-templates.

Each template folder is archived on its own by the republisher and uploaded to
Coder, so every folder is self-contained: a thin root module (template
variables + provider wiring) and a vendored copy of the shared workspace module
under modules/workspace. These tests parse the Terraform with python-hcl2 and
pin the platform team's spec: envbuilder by digest, no Docker daemon, the
developer's own GitHub token, code-server in the same container, best-effort
Codex tooling, reaper labels, and nothing that turns a workspace into an
automated executor.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from tests.kube import server
from tests.tf_text import block_text

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO_ROOT / "chart" / "files" / "coder-templates"
MODULE_SUBDIR = Path("modules") / "workspace"
SETTINGS_FILE = "coder-template.yaml"

# Template name -> repository envbuilder clones by default.
EXPECTED_TEMPLATES = {
    "ameide-dev": "https://github.com/ameideio/ameide",
    "ameide-gitops": "https://github.com/ameideio/ameide-gitops",
}

CODEX_AUTH_SLOTS = [
    "codex-auth-rotating-0",
    "codex-auth-rotating-1",
    "codex-auth-rotating-2",
    "codex-auth-0",
    "codex-auth-1",
    "codex-auth-2",
]

REAPER_LABELS = {
    "app.kubernetes.io/name": "coder-workspace",
    "app.kubernetes.io/part-of": "coder",
    "com.coder.workspace.id": "${data.coder_workspace.me.id}",
    "com.coder.workspace.name": "${data.coder_workspace.me.name}",
    "com.coder.user.id": "${data.coder_workspace_owner.me.id}",
    "com.coder.user.username": "${data.coder_workspace_owner.me.name}",
    "com.coder.template.name": "${var.template_name}",
}


# --------------------------------------------------------------------------
# HCL loading helpers
# --------------------------------------------------------------------------


def _load_hcl(path: Path) -> dict[str, Any]:
    """Parse one .tf file into plain Python values.

    python-hcl2 8.x keeps string quotes and adds block markers by default;
    ask for plain strings and no markers. Interpolations stay as "${...}" and
    heredocs stay raw ("<<-EOT ... EOT"), which keeps scripts readable.
    """
    with path.open(encoding="utf-8") as f:
        try:
            from hcl2 import SerializationOptions
        except ImportError:  # python-hcl2 7.x already returns plain values
            return hcl2.load(f)
        options = SerializationOptions(
            with_comments=False,
            explicit_blocks=False,
            preserve_heredocs=True,
            strip_string_quotes=True,
        )
        return hcl2.load(f, serialization_options=options)


class TfModule:
    """All .tf files of one Terraform module directory, merged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = sorted(directory.glob("*.tf"))
        assert self.files, f"no .tf files in {directory}"
        self.variables: dict[str, dict] = {}
        self.resources: dict[tuple[str, str], dict] = {}
        self.data: dict[tuple[str, str], dict] = {}
        self.modules: dict[str, dict] = {}
        self.providers: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.required_providers: dict[str, dict] = {}
        for path in self.files:
            doc = _load_hcl(path)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for block in doc.get(kind, []):
                    for rtype, by_name in block.items():
                        for rname, body in by_name.items():
                            target[(rtype, rname)] = body
            for block in doc.get("module", []):
                self.modules.update(block)
            for block in doc.get("provider", []):
                self.providers.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("terraform", []):
                for rp in block.get("required_providers", []):
                    self.required_providers.update(rp)

    def resource(self, rtype: str, name: str) -> dict:
        assert (rtype, name) in self.resources, f"missing resource {rtype}.{name} in {self.directory}"
        return self.resources[(rtype, name)]

    def resources_of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def raw_text(self) -> str:
        return "\n".join(p.read_text(encoding="utf-8") for p in self.files)


def _one(blocks: list[dict], what: str) -> dict:
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected exactly one {what}, got {blocks!r}"
    return blocks[0]


def _dynamic(body: dict, name: str) -> list[dict]:
    return [d[name] for d in body.get("dynamic", []) if name in d]


def _heredoc(value: str) -> str:
    """Body of a heredoc string as hcl2 returns it: markers stripped and, like Terraform does for
    `<<-`, the common indentation removed."""
    lines = value.splitlines()
    if lines and lines[0].startswith("<<"):
        lines = lines[1:-1]
    return textwrap.dedent("\n".join(lines))


def _template_files(template: str) -> list[Path]:
    return sorted(p for p in (TEMPLATES_DIR / template).rglob("*") if p.is_file())


def _root(template: str) -> TfModule:
    return TfModule(TEMPLATES_DIR / template)


def _workspace_module(template: str) -> TfModule:
    return TfModule(TEMPLATES_DIR / template / MODULE_SUBDIR)


def _deployment(template: str) -> dict:
    deployments = _workspace_module(template).resources_of_type("kubernetes_deployment")
    deployments |= _workspace_module(template).resources_of_type("kubernetes_deployment_v1")
    assert len(deployments) == 1, f"expected one workspace deployment, got {sorted(deployments)}"
    return next(iter(deployments.values()))


def _pod_spec(template: str) -> dict:
    spec = _one(_deployment(template)["spec"], "deployment spec")
    pod_template = _one(spec["template"], "pod template")
    return _one(pod_template["spec"], "pod spec")


def _container(template: str) -> dict:
    return _one(_pod_spec(template)["container"], "container")


def _env(template: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in _container(template).get("env", []):
        assert entry["name"] not in env, f"duplicate env {entry['name']}"
        if "value_from" in entry:
            ref = _one(_one(entry["value_from"], "value_from")["secret_key_ref"], "secret_key_ref")
            env[entry["name"]] = f"secret:{ref['name']}/{ref['key']}"
        else:
            env[entry["name"]] = entry["value"]
    return env


CREDENTIALS_SECRET = "secret:${kubernetes_secret_v1.credentials[0].metadata[0].name}"


def _credentials(template: str) -> dict[str, str]:
    module = _workspace_module(template)
    assert module.resource("kubernetes_secret_v1", "credentials")["data"] == "${local.credentials}"
    return module.locals["credentials"]


def _block_text(module: TfModule, rtype: str, name: str) -> str:
    return block_text(module.directory, "resource", rtype, name)


def _script(template: str, name: str) -> tuple[dict, str]:
    body = _workspace_module(template).resource("coder_script", name)
    return body, _heredoc(body["script"])


templates = pytest.mark.parametrize("template", sorted(EXPECTED_TEMPLATES))


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------


def test_exactly_the_expected_templates_are_shipped():
    shipped = {p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir()}
    assert shipped == set(EXPECTED_TEMPLATES)


@templates
def test_template_folder_holds_only_terraform_and_its_settings_file(template):
    # Everything in the folder except coder-template.yaml is uploaded to Coder.
    for path in _template_files(template):
        rel = path.relative_to(TEMPLATES_DIR / template)
        assert path.suffix == ".tf" or rel == Path(SETTINGS_FILE), f"unexpected file {rel}"
    assert (TEMPLATES_DIR / template / SETTINGS_FILE).is_file()
    assert (TEMPLATES_DIR / template / MODULE_SUBDIR).is_dir()


def test_vendored_workspace_module_copies_are_byte_identical():
    copies = {
        t: {
            p.relative_to(TEMPLATES_DIR / t / MODULE_SUBDIR): p.read_bytes()
            for p in (TEMPLATES_DIR / t / MODULE_SUBDIR).rglob("*")
            if p.is_file()
        }
        for t in EXPECTED_TEMPLATES
    }
    reference_name, reference = next(iter(copies.items()))
    assert reference, "workspace module is empty"
    for name, files in copies.items():
        assert files.keys() == reference.keys(), f"{name} module file set differs from {reference_name}"
        for rel, content in files.items():
            assert content == reference[rel], f"{name}/{MODULE_SUBDIR}/{rel} drifted from {reference_name}"


@templates
def test_root_module_is_a_thin_call_into_the_vendored_module(template):
    root = _root(template)
    assert root.resources == {}, "resources belong in the shared module"
    call = root.modules["workspace"]
    assert call["source"] == f"./{MODULE_SUBDIR.as_posix()}"
    assert call["template_name"] == template


# --------------------------------------------------------------------------
# Variables and providers
# --------------------------------------------------------------------------


@templates
def test_every_template_variable_has_a_default(template):
    # A template variable without a default fails provisioning with
    # REQUIRED_TEMPLATE_VARIABLES.
    for name, body in _root(template).variables.items():
        assert "default" in body, f"template variable {name} has no default"


@templates
def test_the_template_passes_every_input_of_the_workspace_module(template):
    call = _root(template).modules["workspace"]
    module_inputs = set(_workspace_module(template).variables)
    passed = set(call) - {"source"}
    assert passed == module_inputs
    root_vars = set(_root(template).variables)
    for name, value in call.items():
        if isinstance(value, str) and value.startswith("${var."):
            assert value[len("${var.") : -1] in root_vars, f"{name} refers to an undeclared variable"


@templates
def test_template_variable_defaults_match_the_platform_spec(template):
    defaults = {name: body["default"] for name, body in _root(template).variables.items()}
    assert defaults["namespace"] == "coder-workspaces"
    assert defaults["environment"] == "dev"
    assert defaults["service_account_name"] == "coder-workspace"
    assert defaults["use_kubeconfig"] is False
    # Off unless the chart turns it on, like workspaces.codex.enabled (which opens OpenAI egress).
    assert defaults["codex_enabled"] is False
    assert defaults["repo_url"] == EXPECTED_TEMPLATES[template]


@templates
def test_providers_are_pinned_to_major_version_2(template):
    for module in (_root(template), _workspace_module(template)):
        rp = module.required_providers
        assert rp["coder"]["source"] == "coder/coder"
        assert rp["coder"]["version"].startswith("~> 2.")
        assert rp["kubernetes"]["source"] == "hashicorp/kubernetes"
        assert rp["kubernetes"]["version"].startswith("~> 2.")


@templates
def test_kubernetes_provider_is_in_cluster_unless_use_kubeconfig(template):
    root = _root(template)
    config_path = root.providers["kubernetes"]["config_path"]
    assert "var.use_kubeconfig" in config_path and ": null" in config_path
    # Only the root configures providers; the vendored module inherits them.
    assert _workspace_module(template).providers == {}


# --------------------------------------------------------------------------
# envbuilder and the pod
# --------------------------------------------------------------------------


@templates
def test_envbuilder_image_is_pinned_by_digest(template):
    variable = _root(template).variables["envbuilder_image"]
    assert re.fullmatch(r"ghcr\.io/coder/envbuilder@sha256:[0-9a-f]{64}", variable["default"])
    validation = _one(variable["validation"], "envbuilder_image validation")
    assert "@sha256:" in validation["condition"]
    assert "var.envbuilder_image" in validation["condition"]
    assert _container(template)["image"] == "${var.envbuilder_image}"


@templates
def test_workspace_is_built_by_envbuilder_from_the_coder_devcontainer(template):
    env = _env(template)
    assert env["ENVBUILDER_DEVCONTAINER_DIR"] == ".devcontainer/coder"
    assert env["ENVBUILDER_GIT_URL"] == "${var.repo_url}"
    assert _root(template).modules["workspace"]["repo_url"] == "${var.repo_url}"
    assert _root(template).variables["repo_url"]["default"] == EXPECTED_TEMPLATES[template]


@templates
def test_envbuilder_execs_the_coder_agent(template):
    env = _env(template)
    assert env["ENVBUILDER_INIT_SCRIPT"] == "${coder_agent.main.init_script}"
    assert env["CODER_AGENT_TOKEN"] == f"{CREDENTIALS_SECRET}/CODER_AGENT_TOKEN"
    assert _credentials(template)["CODER_AGENT_TOKEN"] == "${coder_agent.main.token}"
    # The fallback image and the layer cache are set only when their variables are non-empty.
    dynamic_env = {_one(d["content"], "env content")["name"]: d["for_each"] for d in _dynamic(_container(template), "env")}
    assert dynamic_env == {
        "ENVBUILDER_FALLBACK_IMAGE": '${var.fallback_image == "" ? [] : [var.fallback_image]}',
        "ENVBUILDER_CACHE_REPO": '${var.cache_repo == "" ? [] : [var.cache_repo]}',
    }


@templates
def test_a_devcontainer_that_does_not_build_starts_the_pinned_fallback_image(template):
    """Without a fallback envbuilder exits and the pod restarts in a loop with no way in."""
    variable = _root(template).variables["fallback_image"]
    assert re.fullmatch(r"mcr\.microsoft\.com/devcontainers/base:ubuntu@sha256:[0-9a-f]{64}", variable["default"])
    assert "@sha256:" in _one(variable["validation"], "fallback_image validation")["condition"]
    assert _root(template).modules["workspace"]["fallback_image"] == "${var.fallback_image}"


@templates
def test_no_layer_cache_unless_a_cache_repo_is_given(template):
    variable = _root(template).variables["cache_repo"]
    assert variable["default"] == ""
    assert "no cache" in variable["description"]
    assert _root(template).modules["workspace"]["cache_repo"] == "${var.cache_repo}"


@templates
def test_workspace_clones_with_the_developers_own_github_token(template):
    module = _workspace_module(template)
    assert module.data[("coder_external_auth", "github")]["id"] == "github"
    env = _env(template)
    assert env["ENVBUILDER_GIT_USERNAME"] == "x-access-token"
    assert env["ENVBUILDER_GIT_PASSWORD"] == f"{CREDENTIALS_SECRET}/ENVBUILDER_GIT_PASSWORD"
    assert _credentials(template)["ENVBUILDER_GIT_PASSWORD"] == "${data.coder_external_auth.github.access_token}"


@templates
def test_no_credential_is_readable_from_the_pod_or_deployment_spec(template):
    """Workspace service accounts may read Deployments and Pods in the namespace, not Secrets:
    tokens must be secretKeyRefs, never env values another developer's kubectl could see."""
    for name, value in _env(template).items():
        assert "access_token" not in value and "agent.main.token" not in value, name
    secret = _workspace_module(template).resource("kubernetes_secret_v1", "credentials")
    assert secret["count"] == "${data.coder_workspace.me.start_count}"


@templates
def test_a_new_agent_token_changes_the_pod_template_through_a_hash_only(template):
    """The provider issues a new agent token on every plan; the pod reads the Secret only at
    start. A hash of the credentials on the pod template rolls the pod onto the new token.
    (tests/test_terraform_coder.py evaluates it with the real coder provider.)"""
    module = _workspace_module(template)
    assert module.locals["pod_annotations"] == {"checksum/credentials": "${sha256(jsonencode(local.credentials))}"}
    pod_template = _one(_one(_deployment(template)["spec"], "spec")["template"], "template")
    assert _one(pod_template["metadata"], "pod metadata")["annotations"] == "${local.pod_annotations}"
    # The credentials themselves are referenced from the Deployment only through the hash.
    deployment_text = _block_text(module, "kubernetes_deployment_v1", "workspace")
    for raw in ("coder_agent.main.token", "access_token", "local.credentials"):
        assert raw not in deployment_text, raw


@templates
def test_only_the_v1_kubernetes_resources_are_used(template):
    # kubernetes_deployment / kubernetes_secret are deprecated in provider 3.x; _v1 exist in 2.x.
    for rtype, name in _workspace_module(template).resources:
        if rtype.startswith("kubernetes_"):
            assert rtype.endswith("_v1"), f"{rtype}.{name}"


@templates
def test_pod_runs_only_while_the_workspace_is_started(template):
    deployment = _deployment(template)
    assert deployment["count"] == "${data.coder_workspace.me.start_count}"
    assert _one(deployment["spec"], "deployment spec")["replicas"] == 1
    metadata = _one(deployment["metadata"], "deployment metadata")
    assert metadata["namespace"] == "${var.namespace}"


@templates
def test_pod_has_exactly_one_unprivileged_container(template):
    pod = _pod_spec(template)
    assert len(pod["container"]) == 1, "code-server must run in the workspace container, not a sidecar"
    assert "init_container" not in pod
    assert not _dynamic(pod, "container") and not _dynamic(pod, "init_container")
    security = _one(_container(template)["security_context"], "container security_context")
    assert security["privileged"] is False
    assert "host_network" not in pod and "host_pid" not in pod


@templates
def test_no_docker_daemon_socket_or_k3d_anywhere(template):
    for path in _template_files(template):
        text = path.read_text(encoding="utf-8").lower()
        for forbidden in ("docker.sock", "dockerd", "k3d", "host_path", "dind"):
            assert forbidden not in text, f"{forbidden!r} found in {path}"
        assert not re.search(r"privileged\s*=\s*true", text), f"privileged = true in {path}"


@templates
def test_home_and_workspaces_are_empty_dir_volumes(template):
    pod = _pod_spec(template)
    volumes = {v["name"]: v for v in pod["volume"]}
    mounts = {m["name"]: m["mount_path"] for m in _container(template)["volume_mount"]}
    locals_ = _workspace_module(template).locals
    assert mounts["workspaces"] == "/workspaces"
    assert mounts["home"] == "${local.home_dir}"
    assert locals_["home_dir"] == "/home/${local.username}"
    assert locals_["username"] == "${data.coder_workspace_owner.me.name}"
    # Every session, script and app the agent starts gets the per-user home.
    assert _workspace_module(template).resource("coder_agent", "main")["env"]["HOME"] == "${local.home_dir}"
    for name in ("workspaces", "home"):
        assert "empty_dir" in volumes[name], f"{name} must be an emptyDir"
        assert set(volumes[name]) == {"name", "empty_dir"}


@templates
def test_container_has_cpu_and_memory_requests_and_limits(template):
    resources = _one(_container(template)["resources"], "resources")
    for kind in ("requests", "limits"):
        assert set(resources[kind]) >= {"cpu", "memory"}, f"missing {kind}"
    defaults = {n: b["default"] for n, b in _root(template).variables.items()}
    for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert defaults[name], f"{name} needs a sane default"


@templates
def test_workspace_uses_the_charts_service_account_with_a_token_for_kubectl(template):
    pod = _pod_spec(template)
    assert pod["service_account_name"] == "${var.service_account_name}"
    assert pod["automount_service_account_token"] is True
    module = _workspace_module(template)
    for rtype, _ in module.resources:
        assert not rtype.startswith(("kubernetes_service_account", "kubernetes_role", "kubernetes_cluster_role")), (
            "the service account and its RBAC come from the Helm chart"
        )
    # The only Secret is the workspace's own credentials (written by the provisioner, never read back).
    assert [r for r in module.resources if r[0].startswith("kubernetes_secret")] == [("kubernetes_secret_v1", "credentials")]
    assert not [d for d in module.data if d[0].startswith("kubernetes_secret")], "the template must not read secrets"


@templates
def test_workspace_knows_its_namespace_and_environment(template):
    env = _env(template)
    assert env["WORKSPACE_NAMESPACE"] == "${var.namespace}"
    assert env["AMEIDE_ENVIRONMENT"] == "${var.environment}"
    agent_env = _workspace_module(template).resource("coder_agent", "main")["env"]
    assert agent_env["WORKSPACE_NAMESPACE"] == "${var.namespace}"
    assert agent_env["AMEIDE_ENVIRONMENT"] == "${var.environment}"
    body, script = _script(template, "kube_context")
    assert body["start_blocks_login"] is False
    assert "${var.namespace}" in script
    assert 'kubectl config set-context --current --namespace="$ns"' in script
    assert "namespace: $ns" in script  # generated in-cluster kubeconfig
    assert script.rstrip().endswith("exit 0")


@templates
def test_pods_carry_the_reaper_labels(template):
    module = _workspace_module(template)
    assert module.locals["labels"] == REAPER_LABELS
    deployment = _deployment(template)
    assert _one(deployment["metadata"], "metadata")["labels"] == "${local.labels}"
    pod_template = _one(_one(deployment["spec"], "spec")["template"], "template")
    assert _one(pod_template["metadata"], "pod metadata")["labels"] == "${local.labels}"
    assert _root(template).modules["workspace"]["template_name"] == template


# --------------------------------------------------------------------------
# code-server and Codex
# --------------------------------------------------------------------------


# The vendor module, by reference: source and pinned version, and only inputs it declares.
CODE_SERVER_SOURCE = "registry.coder.com/coder/code-server/coder"
CODE_SERVER_VERSION = "1.5.2"
# Input names of registry.coder.com/coder/code-server/coder 1.5.2 (variables of its main.tf in
# github.com/coder/registry, registry/coder/modules/code-server, tag release/coder/code-server/v1.5.2).
CODE_SERVER_INPUTS = {
    "agent_id", "extensions", "port", "display_name", "slug", "settings", "machine_settings", "folder",
    "workspace", "install_prefix", "log_path", "install_version", "share", "order", "group", "offline",
    "use_cached", "use_cached_extensions", "extensions_dir", "auto_install_extensions", "subdomain",
    "open_in", "additional_args",
}


def _code_server(template: str) -> dict:
    return _workspace_module(template).modules["code-server"]


@templates
def test_code_server_is_the_vendor_module_pinned_by_version(template):
    call = _code_server(template)
    assert call["source"] == CODE_SERVER_SOURCE
    assert call["version"] == CODE_SERVER_VERSION  # exact: a range would float to new code
    inputs = set(call) - {"source", "version", "count"}
    assert inputs <= CODE_SERVER_INPUTS, f"not inputs of the module: {sorted(inputs - CODE_SERVER_INPUTS)}"
    assert call["count"] == "${data.coder_workspace.me.start_count}"
    assert call["agent_id"] == "${coder_agent.main.id}"
    assert call["folder"] == "${local.workspace_folder}"
    assert call["subdomain"] is False
    # Nothing of the module is copied here: no hand-rolled code-server script or app.
    module = _workspace_module(template)
    assert ("coder_script", "code_server") not in module.resources
    assert not module.resources_of_type("coder_app")


@templates
def test_code_server_gets_the_codex_extension_through_its_extensions_input(template):
    assert _code_server(template)["extensions"] == '${var.codex_enabled ? ["openai.chatgpt"] : []}'


@templates
def test_code_server_runs_what_the_image_ships_and_downloads_nothing(template):
    """The module's installer (code-server.dev) and gallery (open-vsx.org) are outside every
    environment's egress allowlist: use the image's code-server and extensions."""
    call = _code_server(template)
    assert call["use_cached"] is True and call["use_cached_extensions"] is True
    assert "offline" not in call  # offline refuses any extensions input (a module precondition)
    assert call["install_prefix"] == "${var.code_server_prefix}"
    assert call["extensions_dir"] == "${var.code_server_extensions_dir}"
    _, check = _script(template, "image_tools")
    assert 'bin="${var.code_server_prefix}/bin/code-server"' in check
    assert "MISSING: code-server is not in the devcontainer image" in check
    assert "MISSING: the openai.chatgpt extension" in check


@templates
@pytest.mark.parametrize("script_name", ["codex_cli", "codex_auth"])
def test_codex_scripts_are_best_effort_and_never_block_login(template, script_name):
    body, script = _script(template, script_name)
    assert body["start_blocks_login"] is False
    assert body["run_on_start"] is True
    assert body["count"] == "${var.codex_enabled ? 1 : 0}"
    assert script.rstrip().endswith("exit 0")
    assert "set -e" not in script


@templates
def test_every_script_of_ours_fails_its_pipelines(template):
    # Without pipefail `curl ... | tar` reports tar's status and a failed download looks fine.
    module = _workspace_module(template)
    scripts = module.resources_of_type("coder_script")
    assert scripts, "no coder_script found"
    for name, body in scripts.items():
        lines = _heredoc(body["script"]).strip().splitlines()
        assert lines[0] == "#!/usr/bin/env bash", name
        assert re.fullmatch(r"set -[a-z]*o pipefail", lines[1]), f"{name}: second line is {lines[1]!r}"
        assert body["start_blocks_login"] is False, name


@templates
def test_codex_cli_comes_from_the_image_or_a_pinned_github_release(template):
    _, cli = _script(template, "codex_cli")
    assert "npm" not in cli  # registries stay closed to workspaces
    assert "https://github.com/openai/codex/releases/download/rust-v${var.codex_version}/codex-$triple.tar.gz" in cli
    assert "releases/latest" not in cli
    assert re.fullmatch(r"\d+\.\d+\.\d+", _root(template).variables["codex_version"]["default"])


@templates
def test_codex_auth_is_seeded_from_the_first_mounted_slot(template):
    module = _workspace_module(template)
    assert module.locals["codex_auth_slots"] == CODEX_AUTH_SLOTS
    _, script = _script(template, "codex_auth")
    assert 'for slot in ${join(" ", local.codex_auth_slots)}; do' in script
    assert 'src="${local.codex_auth_mount}/$slot/auth.json"' in script
    assert "break" in script  # first available slot wins
    assert 'cp "$src" "$HOME/.codex/auth.json" && chmod 0600 "$HOME/.codex/auth.json"' in script
    assert 'config="$HOME/.codex/config.toml"' in script
    assert "echo 'cli_auth_credentials_store = \"file\"'" in script


@templates
def test_codex_slot_secrets_are_optional_kubelet_mounts_only_when_enabled(template):
    pod = _pod_spec(template)
    (volume,) = _dynamic(pod, "volume")
    assert volume["for_each"] == "${var.codex_enabled ? local.codex_auth_slots : []}"
    secret = _one(_one(volume["content"], "volume content")["secret"], "secret volume")
    assert secret["secret_name"] == "${volume.value}"
    assert secret["optional"] is True
    (mount,) = _dynamic(_container(template), "volume_mount")
    assert mount["for_each"] == "${var.codex_enabled ? local.codex_auth_slots : []}"
    content = _one(mount["content"], "volume_mount content")
    assert content["mount_path"] == "${local.codex_auth_mount}/${volume_mount.value}"
    assert content["read_only"] is True


# --------------------------------------------------------------------------
# Not an executor, no secrets
# --------------------------------------------------------------------------


@templates
def test_workspace_cannot_act_as_an_automated_executor(template):
    for path in _template_files(template):
        text = path.read_text(encoding="utf-8").upper()
        for word in ("KAFKA", "QUEUE", "RUNNER"):
            assert word not in text, f"{word} found in {path}"
    names = set(_env(template)) | set(_root(template).variables) | set(_workspace_module(template).variables)
    for name in names:
        assert not re.search(r"KAFKA|QUEUE|RUNNER", name, re.IGNORECASE), name


SECRET_PATTERNS = [
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?i)\b\w*(password|passwd|secret|token)\w*\s*=\s*\"(?!\$\{)[^\"]+\""),
]


@templates
def test_no_secret_literals_in_the_template(template):
    for path in _template_files(template):
        text = path.read_text(encoding="utf-8")
        for pattern in SECRET_PATTERNS:
            match = pattern.search(text)
            assert match is None, f"secret-looking literal {match.group(0)!r} in {path}"
    for name, value in _env(template).items():
        if re.search(r"PASSWORD|TOKEN|SECRET", name):
            assert value.startswith(CREDENTIALS_SECRET) or (value.startswith("${") and value.endswith("}")), (
                f"{name} must come from a reference")


# --------------------------------------------------------------------------
# Template settings (coder-template.yaml)
# --------------------------------------------------------------------------


@templates
def test_template_settings_enable_idle_autostop(template):
    settings = yaml.safe_load((TEMPLATES_DIR / template / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert settings["display_name"]
    assert len(settings["description"]) < 128
    assert settings["icon"].startswith("/icon/")
    assert isinstance(settings["default_ttl_ms"], int) and settings["default_ttl_ms"] > 0
    assert isinstance(settings["activity_bump_ms"], int) and settings["activity_bump_ms"] > 0
    assert settings["allow_user_cancel_workspace_jobs"] is False
    variables = settings.get("variables") or {}
    template_vars = _root(template).variables
    for name, value in variables.items():
        assert name in template_vars, f"{SETTINGS_FILE} sets unknown variable {name}"
        assert isinstance(value, str), f"{name} must be a string (sent as user_variable_values)"


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


def test_templates_are_terraform_fmt_clean():
    terraform = server.terraform()  # PATH, else the one `./dev test`'s build step made
    if terraform is None:
        if os.environ.get("CI") == "true":
            pytest.fail("terraform is neither on PATH nor built by the build step (tests/kube/server.py)")
        pytest.skip("terraform not on PATH and not built yet")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TEMPLATES_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"terraform fmt found unformatted files:\n{result.stdout}"
