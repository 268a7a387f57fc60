"""The image built from images/Dockerfile (tests/kube/image.py), inspected without a node.

What a node runs is the docker archive: its config is read from the archive itself, its files
from a working container of the same image in buildah's storage, and `coder-jobs --help` runs in
it as uid 10001 with no network. Where the machine cannot build (not root, no apt-get) these
tests skip and say why; on CI (`CI=true`) that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import image
from tests.test_image import DOCKERFILE, LOCK, lock_entries, norm

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]  # a cold build takes minutes

# Anything that could install Python packages: the installers, their ensurepip wheels, and
# setuptools' import-time hooks.
PACKAGE_MANAGERS = re.compile(r"(pip|pip3(\.\d+)?|setuptools|wheel|pkg_resources|_distutils_hack|ensurepip"
                              r"|distutils-precedence\.pth)|(pip|setuptools|wheel)-[^/]*\.(dist|egg)-info|.*\.whl")


@pytest.fixture(scope="session")
def builds(pytestconfig: pytest.Config) -> dict[str, image.ImageBuild]:
    try:
        built = [image.build_base(), image.build_pause(), image.build_image()]
    except image.Unavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must build the image, and this machine cannot: {exc}")
        pytest.skip(str(exc))
    lines = [f"image {b.describe()}" for b in built]
    # A session fixture has no capsys: the capture manager's switch is the same one. xdist shows no
    # worker output, so the lines also go to the report that conftest prints at the end.
    with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n" + "\n".join(lines), flush=True)
    report = Path(os.environ.get("CODER_JOBS_KUBE_REPORT", tempfile.gettempdir()))
    (report / "image.txt").write_text("\n".join(lines) + "\n")
    return {b.reference: b for b in built}


@pytest.fixture(scope="session")
def product(builds: dict[str, image.ImageBuild]) -> image.ImageBuild:
    return builds[image.IMAGE_REF]


@pytest.fixture(scope="session")
def pause(builds: dict[str, image.ImageBuild]) -> image.ImageBuild:
    return builds[image.PAUSE_REF]


@pytest.fixture(scope="session")
def product_root(product: image.ImageBuild) -> Iterator[Path]:
    with image.rootfs(product.reference) as root:
        yield root


def archive_manifest(build: image.ImageBuild) -> dict:
    assert build.archive is not None
    with tarfile.open(build.archive) as tar:
        return json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]


def dockerfile_default(arg: str) -> str:
    m = re.search(rf"^ARG {arg}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert m, f"images/Dockerfile has no default for {arg}"
    return m.group(1)


# ---------------------------------------------------------------------------------- product image

def test_the_archive_holds_the_built_image_under_its_reference(product: image.ImageBuild) -> None:
    manifest = archive_manifest(product)
    assert manifest["RepoTags"] == [image.IMAGE_REF]
    assert manifest["Config"] == product.image_id.removeprefix("sha256:") + ".json"
    assert product.archive_bytes >= product.size_bytes > 0


def test_the_image_runs_as_10001_with_the_coder_jobs_entrypoint(product: image.ImageBuild) -> None:
    config = image.archive_config(product.archive)  # type: ignore[arg-type]
    assert config["User"] == "10001:10001"  # the chart's runAsUser/runAsGroup
    assert config["Entrypoint"] == ["coder-jobs"]
    assert "HOME=/tmp" in config["Env"]


def test_the_oci_labels_name_the_source_version_and_revision(product: image.ImageBuild) -> None:
    labels = image.archive_config(product.archive)["Labels"]  # type: ignore[arg-type]
    assert labels["org.opencontainers.image.version"] == image.project_version()
    assert labels["org.opencontainers.image.source"] == dockerfile_default("SOURCE")
    # The commit the image was built from: HEAD then, which a later commit that changes none of the
    # image's files does not move.
    assert re.fullmatch(r"[0-9a-f]{40}|test", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.title"] == "coder-jobs"


def test_no_python_package_manager_is_left_anywhere_in_the_image(product_root: Path) -> None:
    found = []
    for folder, dirs, files in os.walk(product_root):
        for name in dirs + files:
            if PACKAGE_MANAGERS.fullmatch(name):
                found.append("/" + str(Path(folder, name).relative_to(product_root)))
    assert found == []


def test_the_venv_holds_exactly_the_locked_distributions_and_coder_jobs(product_root: Path) -> None:
    installed = {}
    for metadata in (product_root / "opt/venv/lib/python3.11/site-packages").glob("*.dist-info/METADATA"):
        headers = dict(re.findall(r"^(Name|Version): (\S+)$", metadata.read_text(errors="replace"), re.M))
        installed[norm(headers["Name"])] = headers["Version"]
    locked = {name: version for name, (version, _) in lock_entries(LOCK).items()}
    assert installed == {**locked, "coder-jobs": image.project_version()}


def test_coder_jobs_help_runs_in_the_image_as_10001_without_network(product: image.ImageBuild) -> None:
    result = image.run(product.reference, "coder-jobs", "--help", user="10001:10001")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: coder-jobs")


# ---------------------------------------------------------------------------------- pause image

def test_the_pause_image_is_one_layer_holding_only_the_pause_binary(pause: image.ImageBuild) -> None:
    manifest = archive_manifest(pause)
    assert manifest["RepoTags"] == [image.PAUSE_REF] and len(manifest["Layers"]) == 1
    with tarfile.open(pause.archive) as outer:  # type: ignore[arg-type]
        layer = tarfile.open(fileobj=outer.extractfile(manifest["Layers"][0]))
        files = [m.name.lstrip("./") for m in layer.getmembers() if m.isfile()]
        binary = layer.extractfile(next(m for m in layer.getmembers() if m.isfile())).read()  # type: ignore[union-attr]
    assert files == ["pause"]
    assert image.archive_config(pause.archive)["Entrypoint"] == ["/pause"]  # type: ignore[arg-type]
    assert not elf_interpreter(binary), "a scratch image has no dynamic loader: pause must be static"


def elf_interpreter(elf: bytes) -> bool:
    """True when a 64-bit little-endian ELF asks for a dynamic loader (a PT_INTERP program header)."""
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))

