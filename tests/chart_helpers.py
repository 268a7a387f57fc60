"""Render the Helm chart with the real Helm engine (helm-python-sdk) and walk the objects."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterator

import yaml

import helm_python as helm

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "chart"
TEMPLATES_DIR = CHART_DIR / "files" / "coder-templates"
RELEASE = "coder-jobs"
NAMESPACE = "coder"
ENVIRONMENTS = ("local", "dev", "staging", "production")
KUBE_VERSION = "1.37.0"  # newest schema set kubernetes-validate ships (checked in the tests)
DIGEST = "sha256:" + "ab" * 32


def values_file(env: str) -> Path:
    return CHART_DIR / f"values-{env}.yaml"


def load_values(env: str) -> dict[str, Any]:
    return yaml.safe_load(values_file(env).read_text()) or {}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def render_raw(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """template path -> manifest text (NOTES.txt included), exactly as `helm template` renders."""
    return chart().render(values or {}, name=name, namespace=namespace)


def parse(manifests: dict[str, str]) -> list[dict[str, Any]]:
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append(doc)
    return objects


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return parse(render_raw(values, **kwargs))


class Rendered:
    """The objects of one render, with lookups the tests share."""

    def __init__(self, objects: list[dict[str, Any]], notes: str = "") -> None:
        self.objects = objects
        self.notes = notes

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)} (have {sorted(self.names(kind))})"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.kind(kind)}

    def hooks(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if "argocd.argoproj.io/hook" in o["metadata"]["annotations"]]


def rendered(values: dict[str, Any] | None = None, **kwargs: Any) -> Rendered:
    raw = render_raw(values, **kwargs)
    notes = next((v for k, v in raw.items() if k.endswith("NOTES.txt")), "")
    return Rendered(parse(raw), notes)


def env_values(env: str, *, enable: bool = False) -> dict[str, Any]:
    values = load_values(env)
    if enable:
        values = deep_merge(values, {"enabled": True})
    return values


def pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Pod specs inside a Job or CronJob."""
    if obj["kind"] == "Job":
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def job_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Job" else obj["spec"]["jobTemplate"]["spec"]


def subcommand(obj: dict[str, Any]) -> str:
    args = next(pod_specs(obj))["containers"][0]["args"]
    return next(a for a in args if not a.startswith("-") and a not in ("json", "console"))


def env_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = next(pod_specs(obj))["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def template_files() -> dict[str, str]:
    """Relative path under files/coder-templates -> text, skipping what .helmignore drops."""
    out = {}
    for path in sorted(TEMPLATES_DIR.rglob("*")):
        if path.is_file() and ".terraform" not in path.parts and not path.name.endswith((".tfstate", ".swp")):
            out[path.relative_to(TEMPLATES_DIR).as_posix()] = path.read_text()
    return out
