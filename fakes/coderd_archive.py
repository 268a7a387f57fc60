"""What the provisioner would make of an uploaded template archive.

Two kinds of failure are separated, as in coderd:
- `sync_error`: the archive cannot be read, or a `.tf` file has a syntax error. coderd finds
  these while parsing workspace tags inside POST .../templateversions (a 500).
- `job_error`: things only the provisioner notices while extracting (non-local paths, a
  missing parent directory entry, a payload over the DRPC limit, no configuration at all).

HCL is read by the product's own reader (jobs/terraform_files.py, python-hcl2), so the fake and
the jobs cannot disagree on what a template says.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field

from jobs.terraform_files import Block, Expression, HCLError, go_json, parse

DRPC_MAX = 4 * 1024 * 1024
FAIL_PLAN_MARKER = "# fake:fail-plan"


@dataclass
class Variable:
    name: str
    type: str = "string"
    description: str = ""
    default: str | None = None  # None: no default -> required
    sensitive: bool = False

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass
class ArchiveInfo:
    sync_error: str | None = None
    job_error: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # top-level .tf / .tf.json -> text
    variables: list[Variable] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)
    external_auth: list[str] = field(default_factory=list)  # `coder_external_auth` ids, modules included
    fail_plan: bool = False
    readme: str = ""


def _var_type(expr: object) -> str:
    """`type = number` in HCL (an expression), `"type": "number"` in JSON."""
    text = expr.text if isinstance(expr, Expression) else expr
    return text if text in ("number", "bool") else "string"


def parse_variables_hcl(root: Block) -> list[Variable]:
    out = []
    for block in root.blocks:
        if block.type != "variable" or len(block.labels) != 1:
            continue
        description = block.attributes.get("description")
        default = block.attributes.get("default")
        out.append(Variable(
            name=block.labels[0],
            type=_var_type(block.attributes.get("type")),
            description=description if isinstance(description, str) else "",
            default=None if isinstance(default, Expression) else go_json(default),
            sensitive=block.attributes.get("sensitive") is True,
        ))
    return out


def _expressions(block: Block) -> list[str]:
    """The source of every non-literal value in the block and the blocks inside it."""
    out = [v.text for v in block.attributes.values() if isinstance(v, Expression)]
    for inner in block.blocks:
        out += _expressions(inner)
    return out


def parse_variables_json(data: dict) -> list[Variable]:
    out = []
    for name, spec in (data.get("variable") or {}).items():
        spec = spec or {}
        d = spec.get("default")
        out.append(Variable(
            name=name,
            type=_var_type(spec.get("type")),
            description=spec.get("description", ""),
            default=go_json(d),
            sensitive=bool(spec.get("sensitive")),
        ))
    return out


def external_auth_ids_hcl(root: Block) -> list[str]:
    """The `id` of every `data "coder_external_auth"` block (the terraform plan reports these)."""
    return [str(b.attributes.get("id", b.labels[-1])) for b in root.blocks
            if b.type == "data" and b.labels[:1] == ("coder_external_auth",)]


def external_auth_ids_json(data: dict) -> list[str]:
    blocks = ((data.get("data") or {}).get("coder_external_auth") or {}) if isinstance(data, dict) else {}
    return [str((spec or {}).get("id", label)) for label, spec in blocks.items()]


def inspect_archive(data: bytes) -> ArchiveInfo:
    info = ArchiveInfo()
    if not data.strip(b"\0"):
        info.job_error = "template import provision for start: terraform plan: No configuration files"
        return info  # an empty archive extracts to an empty directory
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tf.getmembers()
    except (tarfile.TarError, EOFError, ValueError) as exc:
        info.sync_error = f"create tar reader: {exc}"
        return info
    if not members and data.strip(b"\0"):
        info.sync_error = "create tar reader: archive/tar: invalid tar header"
        return info

    dirs: set[str] = set()
    all_text: dict[str, str] = {}
    for m in members:
        name = m.name
        norm = name.rstrip("/")
        parts = norm.split("/")
        if name.startswith("/") or ".." in parts:
            info.job_error = info.job_error or f"refusing to extract to non-local path {name!r}"
            continue
        if m.isdir():
            dirs.add(norm)
            continue
        if not m.isfile():
            continue  # symlinks etc. are dropped by the provisioner
        parent = "/".join(parts[:-1])
        if parent and parent not in dirs:
            info.job_error = info.job_error or f"create file {norm!r}: open {norm}: no such file or directory"
        f = tf.extractfile(m)
        content = f.read() if f else b""
        text = content.decode("utf-8", errors="replace")
        if norm.endswith(".tf") or norm.endswith(".tf.json"):
            all_text[norm] = text
            if "/" not in norm:
                info.files[norm] = text
        if norm.lower() == "readme.md":
            info.readme = text

    if len(data) > DRPC_MAX:
        info.job_error = info.job_error or f"payload was too big: {len(data)} > {DRPC_MAX}"

    # Synchronous parse of the root module (tfparse), like coderd's workspace tag check: with
    # the product's own reader (jobs/terraform_files.py), so both read HCL the same way.
    roots: dict[str, Block] = {}
    for name in sorted(info.files):
        text = info.files[name]
        try:
            if name.endswith(".tf.json"):
                json.loads(text)
            else:
                roots[name] = parse(text, name)
        except ValueError as exc:  # HCLError is one
            detail = str(exc) if isinstance(exc, HCLError) else f"{name}:1,1-2: Syntax error; {exc}"
            info.sync_error = f"load module: {detail}"
            return info

    declared: list[Variable] = []
    for name in sorted(info.files):
        if name in roots:
            declared.extend(parse_variables_hcl(roots[name]))
            continue
        try:
            declared.extend(parse_variables_json(json.loads(info.files[name])))
        except (ValueError, AttributeError):
            pass
    info.variables = declared
    names = {v.name for v in declared}
    refs: list[str] = []
    for name, text in sorted(all_text.items()):
        if FAIL_PLAN_MARKER in text:
            info.fail_plan = True
        try:
            ids = (external_auth_ids_json(json.loads(text)) if name.endswith(".tf.json")
                   else external_auth_ids_hcl(roots.get(name) or parse(text, name)))
        except ValueError:  # a module's file that does not parse: the plan would fail on it first
            ids = []
        info.external_auth += [i for i in ids if i not in info.external_auth]
    for root in roots.values():
        for ref in re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", "\n".join(_expressions(root))):
            if ref not in names and ref not in refs:
                refs.append(ref)
    info.undeclared = refs
    if not info.files and info.job_error is None:
        info.job_error = "template import provision for start: terraform plan: No configuration files"
    return info
