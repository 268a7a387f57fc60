"""The templates' own start scripts, run for real with bash in a sandbox.

Each `coder_script` is rendered the way Terraform renders it (tests/test_terraform_coder.py checks
that against real Terraform where it is available) and run with a temporary HOME and a `curl` on
PATH that fails. A failure branch that can never fire (a pipeline without `pipefail` reports only
its last command) shows up here: the download "succeeds" although curl failed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = REPO_ROOT / "chart" / "files" / "coder-templates"
MODULE = Path("modules") / "workspace"
TEMPLATES = ("ameide-dev", "ameide-gitops")
BASH = shutil.which("bash")
TRIPLE = {"x86_64": "x86_64-unknown-linux-musl", "amd64": "x86_64-unknown-linux-musl",
          "aarch64": "aarch64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}.get(os.uname().machine)


# -- rendering like Terraform ------------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, preserve_heredocs=True,
                                        strip_string_quotes=True)
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=options)


@dataclass(frozen=True)
class Script:
    name: str
    display_name: str
    text: str
    counted: bool  # has a count (e.g. only with codex_enabled)


def _module_parts(template: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
    """(module call in the root, module locals, coder_script bodies)."""
    root_vars: dict[str, Any] = {}
    for block in _load(TEMPLATES_DIR / template / "variables.tf").get("variable", []):
        for name, body in block.items():
            root_vars[name] = body.get("default")
    call = next(b["workspace"] for b in _load(TEMPLATES_DIR / template / "main.tf")["module"] if "workspace" in b)
    locals_: dict[str, Any] = {}
    scripts: dict[str, dict] = {}
    for path in sorted((TEMPLATES_DIR / template / MODULE).glob("*.tf")):
        doc = _load(path)
        for block in doc.get("locals", []):
            locals_.update(block)
        for group in doc.get("resource", []):
            scripts.update(group.get("coder_script", {}))
    inputs = {}
    for name, value in call.items():
        m = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
        inputs[name] = root_vars[m.group(1)] if m else value
    return inputs, locals_, scripts


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_scripts(template: str, **overrides: Any) -> dict[str, Script]:
    """Every coder_script of the workspace module with its `${...}` interpolations evaluated for the
    template's defaults (module inputs overridden by `overrides`, locals by `local_<name>=`)."""
    inputs, locals_, scripts = _module_parts(template)
    for key, value in overrides.items():
        if key.startswith("local_"):
            locals_[key[len("local_"):]] = value
        else:
            inputs[key] = value

    def evaluate(expr: str) -> str:
        if m := re.fullmatch(r"var\.(\w+)", expr):
            return _text(inputs[m.group(1)])
        if m := re.fullmatch(r"local\.(\w+)", expr):
            return _text(locals_[m.group(1)])
        if m := re.fullmatch(r'join\("([^"]*)", local\.(\w+)\)', expr):
            return m.group(1).join(locals_[m.group(2)])
        raise AssertionError(f"{template}: the script renderer does not know ${{{expr}}}; teach it (and keep it simple)")

    out = {}
    for name, body in scripts.items():
        lines = body["script"].splitlines()
        assert lines[0].startswith("<<-"), f"{name}: expected a <<- heredoc"
        text = textwrap.dedent("\n".join(lines[1:-1])) + "\n"
        assert "%{" not in text, f"{name}: template directives are not supported by this renderer"
        text = text.replace("$${", "\0")
        text = re.sub(r"\$\{([^}]*)\}", lambda m: evaluate(m.group(1)), text).replace("\0", "${")
        out[name] = Script(name, body["display_name"], text, "count" in body)
    return out


# -- a sandbox with a failing curl ---------------------------------------------------------------

FAILING_CURL = """#!/bin/sh
echo "curl $*" >> "$CURL_LOG"
echo "curl: (7) Failed to connect: blocked by the test" >&2
exit 7
"""

# Writes a valid archive to stdout and then fails, like a transfer cut off at the end: only
# `pipefail` tells the script that the download failed.
PARTIAL_CURL = """#!/bin/sh
echo "curl $*" >> "$CURL_LOG"
cat "$ARCHIVE"
echo "curl: (18) transfer closed with outstanding read data remaining" >&2
exit 18
"""

GOOD_CURL = """#!/bin/sh
echo "curl $*" >> "$CURL_LOG"
cat "$ARCHIVE"
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@dataclass
class Run:
    rc: int
    output: str
    curl_calls: list[str]
    home: Path


class Sandbox:
    def __init__(self, root: Path, curl: str = FAILING_CURL) -> None:
        self.root = root
        self.home = root / "home"
        self.bin = root / "bin"
        self.home.mkdir()
        self.bin.mkdir()
        _executable(self.bin / "curl", curl)
        self.log = root / "curl.log"
        self.log.touch()
        archive = root / "codex.tar.gz"
        payload = root / f"codex-{TRIPLE}"
        _executable(payload, "#!/bin/sh\necho codex-stub\n")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(payload, arcname=payload.name)
        self.archive = archive

    def run(self, script: Script) -> Run:
        path = self.root / f"{script.name}.sh"
        path.write_text(script.text)
        # Only the stub dir and the system's basic tools: no codex, code-server or kubectl.
        env = {"HOME": str(self.home), "PATH": f"{self.bin}:/usr/bin:/bin", "CURL_LOG": str(self.log),
               "ARCHIVE": str(self.archive), "LANG": "C"}
        result = subprocess.run([BASH, str(path)], env=env, capture_output=True, text=True, timeout=120, cwd=self.root)
        calls = [line for line in self.log.read_text().splitlines() if line]
        return Run(result.returncode, result.stdout + result.stderr, calls, self.home)


pytestmark = pytest.mark.skipif(BASH is None, reason="bash not on PATH")
templates = pytest.mark.parametrize("template", TEMPLATES)


def _script_names() -> list[tuple[str, str]]:
    return [(t, n) for t in TEMPLATES for n in sorted(render_scripts(t, codex_enabled=True))]


@pytest.mark.parametrize(("template", "name"), _script_names())
def test_no_script_reports_success_when_curl_fails(template, name, tmp_path):
    """Every script of ours, with every curl failing: it either downloads nothing or says the
    download failed; none of them blocks the workspace (exit 0, or 1 for a missing image tool)."""
    script = render_scripts(template, codex_enabled=True, local_codex_auth_mount=str(tmp_path / "slots"))[name]
    run = Sandbox(tmp_path).run(script)
    assert run.rc in (0, 1), run.output
    if run.curl_calls:
        assert "failed" in run.output, run.output
        assert "installed" not in run.output, run.output


@templates
@pytest.mark.skipif(TRIPLE is None, reason=f"no Codex release build for {os.uname().machine}")
def test_codex_cli_download_failure_is_reported_even_when_the_archive_arrived(template, tmp_path):
    script = render_scripts(template, codex_enabled=True)["codex_cli"]
    run = Sandbox(tmp_path, curl=PARTIAL_CURL).run(script)
    url = f"https://github.com/openai/codex/releases/download/rust-v0.101.0/codex-{TRIPLE}.tar.gz"
    assert run.curl_calls == [f"curl -fsSL --retry 2 --max-time 300 {url}"]
    assert f"codex: download of {url} failed" in run.output
    assert run.rc == 0  # best effort
    assert not (run.home / ".local" / "bin" / "codex").exists()


@templates
@pytest.mark.skipif(TRIPLE is None, reason=f"no Codex release build for {os.uname().machine}")
def test_without_pipefail_that_failure_branch_would_never_fire(template, tmp_path):
    """The control: the same script minus `pipefail` takes tar's word and claims success."""
    script = render_scripts(template, codex_enabled=True)["codex_cli"]
    broken = Script(script.name, script.display_name, script.text.replace("set -uo pipefail", "set -u"), script.counted)
    assert broken.text != script.text
    run = Sandbox(tmp_path, curl=PARTIAL_CURL).run(broken)
    assert "installed from" in run.output and "failed" not in run.output


@templates
@pytest.mark.skipif(TRIPLE is None, reason=f"no Codex release build for {os.uname().machine}")
def test_codex_cli_installs_the_pinned_release_when_the_download_works(template, tmp_path):
    run = Sandbox(tmp_path, curl=GOOD_CURL).run(render_scripts(template, codex_enabled=True)["codex_cli"])
    assert run.rc == 0 and "codex: 0.101.0 installed from https://github.com/" in run.output, run.output
    installed = run.home / ".local" / "bin" / "codex"
    assert subprocess.run([str(installed)], capture_output=True, text=True).stdout.strip() == "codex-stub"


@templates
def test_codex_cli_prefers_the_image_copy_and_downloads_nothing(template, tmp_path):
    sandbox = Sandbox(tmp_path)
    _executable(sandbox.bin / "codex", "#!/bin/sh\necho image-codex\n")
    run = sandbox.run(render_scripts(template, codex_enabled=True)["codex_cli"])
    assert run.rc == 0 and "(from the image)" in run.output
    assert run.curl_calls == []


def _fake_code_server(prefix: Path, extensions: list[str]) -> None:
    (prefix / "bin").mkdir(parents=True)
    listing = "\n".join(extensions)
    _executable(prefix / "bin" / "code-server",
                f'#!/bin/sh\ncase "$*" in *--list-extensions*) printf "%s\\n" "{listing}" ;; esac\n')


@templates
def test_image_check_says_clearly_what_the_image_lacks(template, tmp_path):
    prefix = tmp_path / "image"
    script = render_scripts(template, codex_enabled=True, code_server_prefix=str(prefix))["image_tools"]
    run = Sandbox(tmp_path).run(script)
    assert run.rc == 1
    assert f"MISSING: code-server is not in the devcontainer image (expected at {prefix}/bin/code-server)." in run.output
    assert "code-server.dev is not in the egress allowlist" in run.output
    assert run.curl_calls == []


@templates
def test_image_check_names_the_missing_codex_extension(template, tmp_path):
    prefix = tmp_path / "image"
    _fake_code_server(prefix, ["ms-python.python"])
    script = render_scripts(template, codex_enabled=True, code_server_prefix=str(prefix))["image_tools"]
    run = Sandbox(tmp_path).run(script)
    assert run.rc == 1
    assert "MISSING: the openai.chatgpt extension is not in /usr/local/share/code-server/extensions." in run.output
    assert "open-vsx.org is not in the egress allowlist" in run.output


@templates
def test_image_check_passes_when_the_image_ships_everything(template, tmp_path):
    prefix = tmp_path / "image"
    _fake_code_server(prefix, ["openai.chatgpt"])
    script = render_scripts(template, codex_enabled=True, code_server_prefix=str(prefix))["image_tools"]
    run = Sandbox(tmp_path).run(script)
    assert run.rc == 0, run.output
    assert "MISSING" not in run.output and run.curl_calls == []
    # Without Codex the extension is not required.
    (tmp_path / "codex-off").mkdir()
    _fake_code_server(tmp_path / "bare", [])
    bare = render_scripts(template, codex_enabled=False, code_server_prefix=str(tmp_path / "bare"))["image_tools"]
    assert Sandbox(tmp_path / "codex-off").run(bare).rc == 0


@templates
def test_codex_auth_seeds_the_first_mounted_slot(template, tmp_path):
    slots = tmp_path / "slots"
    (slots / "codex-auth-1").mkdir(parents=True)
    (slots / "codex-auth-1" / "auth.json").write_text('{"slot": 1}')
    (slots / "codex-auth-2").mkdir()
    (slots / "codex-auth-2" / "auth.json").write_text('{"slot": 2}')
    script = render_scripts(template, codex_enabled=True, local_codex_auth_mount=str(slots))["codex_auth"]
    run = Sandbox(tmp_path).run(script)
    assert run.rc == 0 and "seeded from slot codex-auth-1" in run.output
    auth = run.home / ".codex" / "auth.json"
    assert auth.read_text() == '{"slot": 1}' and stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert (run.home / ".codex" / "config.toml").read_text().startswith('cli_auth_credentials_store = "file"\n')


@templates
def test_kube_context_names_the_workspace_namespace(template, tmp_path):
    run = Sandbox(tmp_path).run(render_scripts(template, namespace="team-ns")["kube_context"])
    assert run.rc == 0 and "kubectl context namespace: team-ns" in run.output
    assert run.curl_calls == []
