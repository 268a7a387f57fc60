"""What the provisioner would make of an uploaded template archive.

Two kinds of failure are separated, as in coderd:
- `sync_error`: the archive cannot be read, or a `.tf` file has a syntax error. coderd finds
  these while parsing workspace tags inside POST .../templateversions (a 500).
- `job_error`: things only the provisioner notices while extracting (non-local paths, a
  missing parent directory entry, a payload over the DRPC limit, no configuration at all).

The HCL "parser" is deliberately cheap: balanced brackets, strings, heredocs and comments.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field

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


class HCLSyntaxError(Exception):
    pass


_PAIRS = {"{": "}", "[": "]", "(": ")"}
_BLOCK_NAMES = {"{": "configuration block", "[": "tuple constructor", "(": "parentheses"}


def check_hcl_syntax(text: str, filename: str) -> None:
    """Raise HCLSyntaxError for unbalanced brackets, unterminated strings/heredocs/comments."""
    stack: list[tuple[str, int, int]] = []  # (opener, line, col); opener "${" for interpolation
    i, n, line, col = 0, len(text), 1, 1

    def where(ln: int, c: int) -> str:
        return f"{filename}:{ln},{c}-{c + 1}"

    def adv(k: int = 1) -> None:
        nonlocal i, line, col
        for _ in range(k):
            if i < n and text[i] == "\n":
                line += 1
                col = 1
            else:
                col += 1
            i += 1

    in_string = False
    str_start = (0, 0)
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                adv(2)
                continue
            if ch == "\n":
                raise HCLSyntaxError(f"{where(*str_start)}: Unterminated template string; No closing marker was found for the string.")
            if ch == '"':
                in_string = False
                adv()
                continue
            if text.startswith("${", i) or text.startswith("%{", i):
                stack.append(("${", line, col))
                in_string = False
                adv(2)
                continue
            adv()
            continue
        if ch == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                adv()
            continue
        if text.startswith("/*", i):
            start = (line, col)
            end = text.find("*/", i + 2)
            if end < 0:
                raise HCLSyntaxError(f"{where(*start)}: Unterminated comment; There is no closing marker for this comment.")
            adv(end + 2 - i)
            continue
        if text.startswith("<<", i):
            m = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n").match(text, i)
            if m:
                marker = m.group(1)
                start = (line, col)
                end = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*$", re.M).search(text, m.end())
                if not end:
                    raise HCLSyntaxError(f"{where(*start)}: Unterminated template string; No closing marker was found for the string.")
                adv(end.end() - i)
                continue
        if ch == '"':
            in_string = True
            str_start = (line, col)
            adv()
            continue
        if ch in _PAIRS:
            stack.append((ch, line, col))
            adv()
            continue
        if ch in ")]}":
            if not stack:
                raise HCLSyntaxError(f"{where(line, col)}: Argument or block definition required; "
                                     "An argument or block definition is required here.")
            opener, ol, oc = stack.pop()
            if opener == "${":
                if ch != "}":
                    raise HCLSyntaxError(f"{where(line, col)}: Invalid expression; Expected the start of an expression, "
                                         "but found an invalid expression token.")
                in_string = True  # back inside the enclosing string
                adv()
                continue
            if _PAIRS[opener] != ch:
                raise HCLSyntaxError(f"{where(line, col)}: Missing close bracket; Found '{ch}' where "
                                     f"'{_PAIRS[opener]}' was expected (opened at line {ol}).")
            adv()
            continue
        adv()
    if in_string:
        raise HCLSyntaxError(f"{where(*str_start)}: Unterminated template string; No closing marker was found for the string.")
    if stack:
        opener, ol, oc = stack[-1]
        if opener == "{":
            raise HCLSyntaxError(
                f"{where(ol, oc)}: Unclosed configuration block; There is no closing brace for this block before the end of the file. "
                "This may be caused by incorrect brace nesting elsewhere in this file."
            )
        raise HCLSyntaxError(f"{where(ol, oc)}: Unclosed {_BLOCK_NAMES.get(opener, 'template interpolation')}; Missing closing bracket.")


def _strip_comments(text: str) -> str:
    out = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    lines = []
    for ln in out.split("\n"):
        # drop # and // comments that are not inside a string (approximation: outside quotes count)
        quote = False
        cut = len(ln)
        j = 0
        while j < len(ln):
            c = ln[j]
            if c == "\\" and quote:
                j += 2
                continue
            if c == '"':
                quote = not quote
            elif not quote and (c == "#" or ln.startswith("//", j)):
                cut = j
                break
            j += 1
        lines.append(ln[:cut])
    return "\n".join(lines)


def _block_body(text: str, open_brace: int) -> str:
    depth = 0
    quote = False
    j = open_brace
    while j < len(text):
        c = text[j]
        if quote:
            if c == "\\":
                j += 2
                continue
            if c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : j]
        j += 1
    return text[open_brace + 1 :]


def _top_level_attrs(body: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    depth = 0
    for ln in body.split("\n"):
        s = ln.strip()
        if depth == 0:
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(.*)$", s)
            if m:
                attrs[m.group(1)] = m.group(2).strip()
        depth += ln.count("{") + ln.count("[") - ln.count("}") - ln.count("]")
    return attrs


def _literal(expr: str) -> str:
    expr = expr.strip()
    if expr.startswith('"') and expr.endswith('"') and len(expr) >= 2:
        try:
            return json.loads(expr)
        except ValueError:
            return expr[1:-1]
    if expr.startswith("[") or expr.startswith("{"):
        try:
            return json.dumps(json.loads(expr))
        except ValueError:
            return expr
    return expr


def _var_type(expr: str | None) -> str:
    if not expr:
        return "string"
    t = expr.strip()
    return t if t in ("number", "bool") else "string"


def parse_variables_hcl(text: str) -> list[Variable]:
    clean = _strip_comments(text)
    out = []
    for m in re.finditer(r'(?m)^\s*variable\s+"([^"]+)"\s*\{', clean):
        body = _block_body(clean, m.end() - 1)
        attrs = _top_level_attrs(body)
        default = _literal(attrs["default"]) if "default" in attrs else None
        if "default" in attrs and attrs["default"].strip() == "null":
            default = None
        out.append(Variable(
            name=m.group(1),
            type=_var_type(attrs.get("type")),
            description=_literal(attrs["description"]) if "description" in attrs else "",
            default=default,
            sensitive=attrs.get("sensitive", "").strip() == "true",
        ))
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
            default=None if d is None else (d if isinstance(d, str) else json.dumps(d)),
            sensitive=bool(spec.get("sensitive")),
        ))
    return out


def external_auth_ids_hcl(text: str) -> list[str]:
    """The `id` of every `data "coder_external_auth"` block (the terraform plan reports these)."""
    clean = _strip_comments(text)
    out = []
    for m in re.finditer(r'(?m)^\s*data\s+"coder_external_auth"\s+"([^"]+)"\s*\{', clean):
        attrs = _top_level_attrs(_block_body(clean, m.end() - 1))
        out.append(_literal(attrs["id"]) if "id" in attrs else m.group(1))
    return out


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

    # Synchronous parse of the root module (tfparse), like coderd's workspace tag check.
    for name in sorted(info.files):
        text = info.files[name]
        if name.endswith(".tf.json"):
            try:
                json.loads(text)
            except ValueError as exc:
                info.sync_error = f"load module: {name}:1,1-2: Syntax error; {exc}"
                return info
            continue
        try:
            check_hcl_syntax(text, name)
        except HCLSyntaxError as exc:
            info.sync_error = f"load module: {exc}"
            return info

    declared: list[Variable] = []
    for name in sorted(info.files):
        text = info.files[name]
        if name.endswith(".tf.json"):
            try:
                declared.extend(parse_variables_json(json.loads(text)))
            except (ValueError, AttributeError):
                pass
        else:
            declared.extend(parse_variables_hcl(text))
    info.variables = declared
    names = {v.name for v in declared}
    refs: list[str] = []
    for name, text in sorted(all_text.items()):
        if FAIL_PLAN_MARKER in text:
            info.fail_plan = True
        if name.endswith(".tf.json"):
            try:
                ids = external_auth_ids_json(json.loads(text))
            except ValueError:
                ids = []
        else:
            ids = external_auth_ids_hcl(text)
        info.external_auth += [i for i in ids if i not in info.external_auth]
    for name, text in info.files.items():
        if name.endswith(".tf"):
            for ref in re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", _strip_comments(text)):
                if ref not in names and ref not in refs:
                    refs.append(ref)
    info.undeclared = refs
    if not info.files and info.job_error is None:
        info.job_error = "template import provision for start: terraform plan: No configuration files"
    return info
