"""Check .tf files against real provider schemas (`terraform providers schema -json`).

Every resource, data source and provider block is looked up in the schema of the provider its
type belongs to, and so is every argument and nested block inside it, dynamic blocks included:
the name must exist, an argument must not be computed-only, required arguments and blocks must
be set, nothing deprecated may be used, and an unversioned kubernetes resource must not be used
where the provider has its `_v1` successor (the unversioned names are deprecated in 3.x).

Module calls have no provider schema: they are reported as skipped, with the reason, and other
tests check them (a local module's inputs against its variables, a registry module's pinned
reference and input names).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2

# Arguments and blocks Terraform itself handles in resource and data blocks.
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
PROVIDER_META = {"alias"}


@dataclass(frozen=True)
class Problem:
    file: str
    block: str
    argument: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.block}: {self.argument}: {self.what}"


@dataclass(frozen=True)
class Skipped:
    file: str
    block: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}: {self.block}: skipped: {self.why}"


def load(path: Path) -> dict[str, Any]:
    """A .tf file with explicit block markers, so a nested block and a map argument differ."""
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=True, preserve_heredocs=True,
                                        strip_string_quotes=True)
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=options)


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


class Schemas:
    def __init__(self, schema_json: Path) -> None:
        self.path = schema_json
        self.providers: dict[str, dict[str, Any]] = json.loads(schema_json.read_text())["provider_schemas"]

    def provider(self, source: str) -> dict[str, Any] | None:
        address = source if source.count("/") == 2 else f"registry.terraform.io/{source}"
        return self.providers.get(address.lower())


class Checker:
    """Collects problems and skipped blocks over any number of files."""

    def __init__(self, schemas: Schemas, required_providers: dict[str, str]) -> None:
        self.schemas = schemas
        self.required_providers = required_providers  # local name -> source, e.g. coder -> coder/coder
        self.problems: list[Problem] = []
        self.skipped: list[Skipped] = []
        self.checked: set[tuple[str, str]] = set()  # (block path, argument) found in the schema

    # -- entry points ---------------------------------------------------------------------
    def check_file(self, path: Path, label: str) -> None:
        doc = load(path)
        for group in doc.get("resource", []):
            for rtype, by_name in group.items():
                for name, body in by_name.items():
                    self._top(label, "resource", rtype, name, body)
        for group in doc.get("data", []):
            for rtype, by_name in group.items():
                for name, body in by_name.items():
                    self._top(label, "data", rtype, name, body)
        for group in doc.get("provider", []):
            for pname, body in group.items():
                self._provider(label, pname, body)
        for group in doc.get("module", []):
            for mname, body in group.items():
                source = str(body.get("source", ""))
                if source.startswith(("./", "../")):
                    why = (f"local module {source}: no provider schema; its files are checked themselves and "
                           "its inputs against its variables (test_coder_templates)")
                else:
                    why = (f"registry module {source} {body.get('version', '(no version)')}: not in the provider "
                           "schemas and not downloadable here; its pinned reference and input names are checked "
                           "by test_coder_templates")
                self.skipped.append(Skipped(label, f"module.{mname}", why))

    # -- blocks ---------------------------------------------------------------------------
    def _provider_schema(self, local_name: str) -> tuple[str, dict[str, Any] | None]:
        source = self.required_providers.get(local_name, f"hashicorp/{local_name}")
        return source, self.schemas.provider(source)

    def _top(self, file: str, kind: str, rtype: str, name: str, body: dict[str, Any]) -> None:
        address = f"{'data.' if kind == 'data' else ''}{rtype}.{name}"
        local_name = str(body.get("provider") or rtype.split("_", 1)[0]).split(".")[0]
        source, provider = self._provider_schema(local_name)
        if provider is None:
            self.problems.append(Problem(file, address, rtype, f"provider {source} is not in {self.schemas.path.name}"))
            return
        table = provider.get("resource_schemas" if kind == "resource" else "data_source_schemas", {})
        schema = table.get(rtype)
        if schema is None:
            hint = _hint(rtype, table)
            self.problems.append(Problem(file, address, rtype, f"no such {kind} type in {source}{hint}"))
            return
        block = schema["block"]
        if block.get("deprecated"):
            self.problems.append(Problem(file, address, rtype, f"the {kind} type is deprecated in {source}"))
        successor = f"{rtype}_v1"
        if rtype.startswith("kubernetes_") and not rtype.endswith("_v1") and successor in table:
            self.problems.append(Problem(file, address, rtype,
                                         f"superseded by {successor} (the unversioned name is deprecated in provider 3.x)"))
        self._block(file, address, body, block, top_level=True)

    def _provider(self, file: str, pname: str, body: dict[str, Any]) -> None:
        source, provider = self._provider_schema(pname)
        address = f"provider.{pname}"
        if provider is None:
            self.problems.append(Problem(file, address, pname, f"provider {source} is not in {self.schemas.path.name}"))
            return
        self._block(file, address, {k: v for k, v in body.items() if k not in PROVIDER_META}, provider["provider"]["block"])

    def _block(self, file: str, path: str, body: dict[str, Any], schema: dict[str, Any], top_level: bool = False) -> None:
        attributes: dict[str, Any] = schema.get("attributes", {})
        block_types: dict[str, Any] = schema.get("block_types", {})
        present_blocks: dict[str, int] = {}
        for key, value in body.items():
            if key == "__is_block__":
                continue
            if top_level and (key in META_ARGUMENTS or key in META_BLOCKS):
                continue
            if key == "dynamic":
                for entry in value:
                    for label, dyn in entry.items():
                        if label == "__is_block__":
                            continue
                        where = f"{path} > dynamic {label}"
                        if label not in block_types:
                            self.problems.append(Problem(file, path, label, "dynamic block of a block type that does not exist"
                                                         + _hint(label, block_types)))
                            continue
                        present_blocks[label] = present_blocks.get(label, 0) + 2  # may expand to any number
                        for content in dyn.get("content", []):
                            self._nested(file, where, label, content, block_types[label])
                continue
            if _is_block_list(value):
                if key not in block_types:
                    what = "is an argument, not a block" if key in attributes else "no such block" + _hint(key, block_types)
                    self.problems.append(Problem(file, path, key, what))
                    continue
                present_blocks[key] = present_blocks.get(key, 0) + len(value)
                for element in value:
                    self._nested(file, f"{path} > {key}", key, element, block_types[key])
                continue
            if key not in attributes:
                what = ("is a block, not an argument" if key in block_types
                        else "no such argument" + _hint(key, attributes))
                self.problems.append(Problem(file, path, key, what))
                continue
            attr = attributes[key]
            self.checked.add((path, key))
            if attr.get("computed") and not attr.get("optional") and not attr.get("required"):
                self.problems.append(Problem(file, path, key, "computed-only: the provider sets it, a template cannot"))
            if attr.get("deprecated"):
                self.problems.append(Problem(file, path, key, "deprecated"))
        for name, attr in attributes.items():
            if attr.get("required") and name not in body:
                self.problems.append(Problem(file, path, name, "required argument is not set"))
        for name, bt in block_types.items():
            count = present_blocks.get(name, 0)
            if bt.get("min_items", 0) > count:
                self.problems.append(Problem(file, path, name, f"required block is missing (at least {bt['min_items']})"))
            if bt.get("max_items") and count > bt["max_items"] and bt.get("nesting_mode") != "set":
                self.problems.append(Problem(file, path, name, f"at most {bt['max_items']} allowed, found {count}"))

    def _nested(self, file: str, path: str, key: str, body: dict[str, Any], block_type: dict[str, Any]) -> None:
        if block_type["block"].get("deprecated"):
            self.problems.append(Problem(file, path, key, "deprecated block"))
        self._block(file, path, body, block_type["block"])


def _hint(name: str, options: dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def required_providers(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        for block in load(path).get("terraform", []):
            for rp in block.get("required_providers", []):
                for name, spec in rp.items():
                    if isinstance(spec, dict) and "source" in spec:
                        out[name] = spec["source"]
    return out


def check_tree(schemas: Schemas, root: Path) -> Checker:
    """Every .tf file under root (a template folder), each module with its own provider names."""
    files = sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)
    by_dir: dict[Path, list[Path]] = {}
    for p in files:
        by_dir.setdefault(p.parent, []).append(p)
    checker = Checker(schemas, {})
    for _directory, paths in sorted(by_dir.items()):
        checker.required_providers = required_providers(paths)
        for p in paths:
            checker.check_file(p, p.relative_to(root.parent).as_posix())
    return checker
