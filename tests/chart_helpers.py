"""Render the Helm chart with the real Helm engine (helm-python-sdk) and walk the objects."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "chart"
TEMPLATES_DIR = CHART_DIR / "files" / "coder-templates"
RELEASE = "coder-jobs"
NAMESPACE = "coder"
ENVIRONMENTS = ("local", "dev", "staging", "production")
KUBE_VERSION = "1.37.0"  # newest schema set kubernetes-validate ships (checked in the tests)
# Oldest supported minor = the floor of Chart.yaml's kubeVersion: the real kube-apiserver the suite
# runs is v1.33.13 (AKS long-term support keeps 1.33 clusters in service).
KUBE_FLOOR = (1, 33)
NEWEST_CLAIMED = (1, 37)
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
SHARED_CRDS = ROOT.parent / "shared" / "crds"  # ../shared/crds: the CRDs the lead installs first
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


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same result, faster


def parse(manifests: dict[str, str], *, normalize: bool = True) -> list[dict[str, Any]]:
    """Objects of a render; `normalize` adds an empty metadata.annotations where there is none."""
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=_LOADER):
            if doc:
                if normalize:
                    doc.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append(doc)
    return objects


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    return parse(render_raw(values, **kwargs))


class Rendered:
    """The objects of one render, with lookups the tests share."""

    def __init__(self, objects: list[dict[str, Any]], notes: str = "", manifests: dict[str, str] | None = None) -> None:
        self.objects = objects
        self.notes = notes
        self.manifests = manifests or {}

    def exact(self) -> list[dict[str, Any]]:
        """The objects exactly as rendered (no added empty annotations)."""
        return parse(self.manifests, normalize=False)

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
    return Rendered(parse(raw), notes, raw)


def env_values(env: str, *, enable: bool = False, released: bool = True) -> dict[str, Any]:
    """A values file; `released`: with the image digest the release workflow's pull request writes
    into it (the committed files have none until the first release)."""
    values = load_values(env)
    if enable:
        values = deep_merge(values, {"enabled": True})
    if released and env != "local" and not values.get("image", {}).get("digest"):
        values = deep_merge(values, {"image": {"digest": DIGEST}})
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


# ------------------------------------------------------------------------- Kubernetes versions


def kube_version_floor() -> tuple[int, int]:
    """(major, minor) of Chart.yaml's `kubeVersion: ">=X.Y.0-0"` (the only form the chart uses)."""
    constraint = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)\.0-0", constraint)
    assert m, f"kubeVersion {constraint!r} is not of the form >=X.Y.0-0"
    return int(m.group(1)), int(m.group(2))


def shipped_minors() -> list[tuple[int, int]]:
    """Every (major, minor) kubernetes-validate ships strict schemas for."""
    out = []
    for d in SCHEMAS.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.0-local-strict", d.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return sorted(out)


def supported_minors() -> list[str]:
    """"1.33.0" ... "1.37.0": every minor from KUBE_FLOOR to NEWEST_CLAIMED, as kubernetes-validate
    names them (the tests check that it ships each one)."""
    major, lo = KUBE_FLOOR
    return [f"{major}.{minor}.0" for minor in range(lo, NEWEST_CLAIMED[1] + 1)]


# ---------------------------------------------- server-side apply: defaults inside atomic fields

# "defaults to X" in a field's OpenAPI description: the API server fills it in when it is absent.
_DEFAULTED = re.compile(r"(?i)\bdefaults? (?:to|is)\b|\bdefaulted\b")
# Fields described with a default the server does not store as a value.
_NOT_FILLED_IN = {
    # "Defaults to "" for ServiceAccount subjects": the empty group, which is stored as absent.
    ("io.k8s.api.rbac.v1.Subject", "apiGroup"): lambda node: node.get("kind") == "ServiceAccount",
}
# Defaults the descriptions do not mention (pkg/apis/*/v1/defaults.go).
_UNDESCRIBED_DEFAULTS = {("io.k8s.api.rbac.v1.RoleRef", "apiGroup")}


@functools.cache
def _definitions(version: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"v{version}-local-strict" / "_definitions.json").read_text())["$defs"]


def _resolve(defs: dict[str, Any], schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    name = None
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = defs[name]
    return name, schema


def _top_definition(defs: dict[str, Any], obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    group, _, version = obj["apiVersion"].rpartition("/")
    for name, schema in defs.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, obj["kind"]):
                return name, schema
    raise KeyError(f"{obj['apiVersion']} {obj['kind']}: no schema")


def unwritten_defaults(obj: dict[str, Any], version: str) -> list[str]:
    """Paths of fields the API server (Kubernetes `version`) would default inside an atomic list or
    struct of a built-in object, where the render leaves them out.

    Server-side apply owns an atomic list (`x-kubernetes-list-type: atomic`, or none) or struct
    (`x-kubernetes-map-type: atomic`) as one value. A default the server fills in makes the stored
    value differ from the chart's: a manager that wrote it first (a client-side apply) then
    conflicts with the chart's server-side apply. Such defaults must be written out."""
    defs = _definitions(version)
    name, schema = _top_definition(defs, obj)
    found: list[str] = []

    def walk(name: str | None, schema: dict[str, Any], node: Any, path: str, atomic: bool) -> None:
        if isinstance(node, dict) and "properties" in schema:
            atomic = atomic or schema.get("x-kubernetes-map-type") == "atomic"
            for key, prop in schema["properties"].items():
                sub_name, sub = _resolve(defs, prop)
                if key in node:
                    walk(sub_name, sub, node[key], f"{path}.{key}", atomic)
                elif atomic and ((name, key) in _UNDESCRIBED_DEFAULTS
                                 or _DEFAULTED.search(prop.get("description", ""))):
                    exempt = _NOT_FILLED_IN.get((name or "", key))
                    if not (exempt and exempt(node)):
                        found.append(f"{path}.{key}")
        elif isinstance(node, list) and "items" in schema:
            atomic = atomic or schema.get("x-kubernetes-list-type", "atomic") == "atomic"
            item_name, item = _resolve(defs, schema["items"])
            for i, x in enumerate(node):
                walk(item_name, item, x, f"{path}[{i}]", atomic)

    walk(name, schema, obj, obj["kind"], False)
    return found


# --------------------------------------------------------------- fields the server does not store

# Keys whose values are maps of user data (an empty string there is a value the server keeps).
_DATA_MAPS = {"labels", "annotations", "data", "binaryData", "matchLabels", "nodeSelector", "hard",
              "default", "defaultRequest", "max", "min", "requests", "limits"}


def empty_fields(node: Any, path: str = "") -> list[str]:
    """Paths of fields rendered empty ("", [], {}, null). Built-in types omit empty optional fields
    (`omitempty`), so the server never stores them and every apply of the empty value is a change
    (a NetworkPolicy's `ingress: []` bumped its generation on each server-side apply)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else key
            if value is None or value in ("", [], {}):
                found.append(where)
            elif key not in _DATA_MAPS:
                found += empty_fields(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += empty_fields(value, f"{path}[{i}]")
    return found


# -------------------------------------------------------------------------------------- CRDs


@functools.lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], tuple[bool, dict[str, Any]]]:
    """(apiVersion, kind) -> (served, openAPIV3Schema) of the CRDs in ../shared/crds."""
    out = {}
    for path in sorted(SHARED_CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for v in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
            out[key] = (bool(v.get("served")), v["schema"]["openAPIV3Schema"])
    return out


def crd_problems(obj: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Fields of a custom resource the server would prune (not in the CRD's structural schema) and
    defaults it would fill in inside atomic lists/structs (CRD lists without a list-type are
    atomic), as for built-in types above."""
    found: list[str] = []

    def walk(schema: dict[str, Any], node: Any, path: str, atomic: bool) -> None:
        if schema.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":
            return
        if isinstance(node, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            atomic = atomic or schema.get("x-kubernetes-map-type") == "atomic"
            if props is not None:
                for key, value in node.items():
                    if key in props:
                        walk(props[key], value, f"{path}.{key}", atomic)
                    else:
                        found.append(f"{path}.{key}: pruned (not in the CRD schema)")
                if atomic:
                    found.extend(f"{path}.{k}: defaulted to {p['default']!r} inside an atomic field"
                                 for k, p in props.items() if k not in node and "default" in p)
            elif isinstance(extra, dict):
                for key, value in node.items():
                    walk(extra, value, f"{path}.{key}", atomic)
        elif isinstance(node, list) and isinstance(schema.get("items"), dict):
            atomic = atomic or schema.get("x-kubernetes-list-type", "atomic") == "atomic"
            for i, value in enumerate(node):
                walk(schema["items"], value, f"{path}[{i}]", atomic)

    walk(schema, obj, "", False)
    return found
