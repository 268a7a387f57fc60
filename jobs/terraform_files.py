"""What the republisher needs to know from a template's Terraform, read without running it.

- The input variables the root module declares (top-level `.tf` / `.tf.json` files, as coderd's
  provisioner reads them with terraform-config-inspect) and their defaults, rendered the way
  coderd reports them: a string default as is, anything else as Go's json.Marshal would write it.
  Every one of them is sent with each new version, because coderd carries a value a version does
  not send over from the active version instead of resetting it (BEHAVIOR.md §11).
- The `id` of every `data "coder_external_auth"` block in any `.tf` file, modules included (the
  import's plan reports them and coderd fails the import when one is not configured, §11).

Terraform allows only literal values as variable defaults, so a small HCL reader suffices: it
understands strings, heredocs, comments, numbers, booleans, null, tuples and objects, and skips
any other expression by its brackets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_NOT_LITERAL = object()  # an expression that is not a literal value
_MISSING = object()


class HCLError(ValueError):
    """What cannot be read, each problem naming its file and line; `problems` holds every one
    found (one per file at most for syntax, since a parser cannot go on after one)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message)


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: no default, the variable is required
    sensitive: bool = False


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident, string, number, punct, newline, eof
    value: Any
    literal: bool = True  # strings: False when they interpolate (${...} or %{...})
    line: int = 0


_PUNCT = set("{}[]()=,:.?!<>+-*/%&|")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _tokens(text: str, where: str) -> Iterator[_Tok]:
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            yield _Tok("newline", "\n", line=line)
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise HCLError(f"{where}:{line}: unterminated comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif c == '"':
            value, literal, i, line = _string(text, i + 1, line, where)
            yield _Tok("string", value, literal, line)
        elif (m := _HEREDOC.match(text, i)) is not None:
            value, literal, i, line = _heredoc(text, m, line, where)
            yield _Tok("string", value, literal, line)
        elif (m := _IDENT.match(text, i)) is not None:
            yield _Tok("ident", m.group(0), line=line)
            i = m.end()
        elif (m := _NUMBER.match(text, i)) is not None:
            yield _Tok("number", m.group(0), line=line)
            i = m.end()
        elif c in _PUNCT:
            yield _Tok("punct", c, line=line)
            i += 1
        else:
            raise HCLError(f"{where}:{line}: unexpected character {c!r}")
    yield _Tok("eof", None, line=line)


def _string(text: str, i: int, line: int, where: str) -> tuple[str, bool, int, int]:
    """A quoted string from just after its opening quote: (value, literal, next index, line)."""
    out: list[str] = []
    literal = True
    n = len(text)
    while True:
        if i >= n or text[i] == "\n":
            raise HCLError(f"{where}:{line}: unterminated string")
        c = text[i]
        if c == '"':
            return "".join(out), literal, i + 1, line
        if c == "\\" and i + 1 < n:
            e = text[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e in "uU":
                width = 4 if e == "u" else 8
                digits = text[i + 2:i + 2 + width]
                if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits) or int(digits, 16) > 0x10FFFF:
                    raise HCLError(f"{where}:{line}: invalid \\{e} escape")
                out.append(chr(int(digits, 16)))
                i += 2 + width
            else:
                raise HCLError(f"{where}:{line}: invalid escape \\{e}")
        elif text.startswith(("$${", "%%{"), i):
            out.append(text[i + 1:i + 3])
            i += 3
        elif text.startswith(("${", "%{"), i):
            literal = False
            i = _skip_template(text, i + 2, line, where)
        else:
            out.append(c)
            i += 1


def _skip_template(text: str, i: int, line: int, where: str) -> int:
    """Past the `}` closing a `${` or `%{` (strings inside it may hold braces)."""
    depth = 1
    while i < len(text):
        c = text[i]
        if c == '"':
            _, _, i, line = _string(text, i + 1, line, where)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise HCLError(f"{where}:{line}: unterminated template interpolation")


def _heredoc(text: str, m: re.Match[str], line: int, where: str) -> tuple[str, bool, int, int]:
    indent, marker = m.group(1) == "-", m.group(2)
    end = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*\r?$", re.M).search(text, m.end())
    if end is None:
        raise HCLError(f"{where}:{line}: unterminated heredoc {marker}")
    body = text[m.end():end.start()]
    lines = body.split("\n")[:-1] if body.endswith("\n") else body.split("\n")
    if indent:  # `<<-`: the smallest indentation of the non-blank lines is removed
        widths = [len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()]
        cut = min(widths, default=0)
        lines = [ln[cut:] for ln in lines]
    value = "".join(ln + "\n" for ln in lines)
    literal = not re.search(r"(?<![$%])[$%]\{", value)
    return value, literal, end.end(), line + text.count("\n", m.start(), end.end())


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.toks = list(_tokens(text, where))
        self.pos = 0
        self.where = where

    def peek(self, offset: int = 0) -> _Tok:
        return self.toks[min(self.pos + offset, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.peek()
        self.pos += 1
        return tok

    def fail(self, what: str) -> HCLError:
        return HCLError(f"{self.where}:{self.peek().line}: {what}")

    def skip_newlines(self) -> None:
        while self.peek().kind == "newline":
            self.pos += 1

    def body(self, closing: str | None, opened: _Tok | None = None, header: str = "") -> list[tuple[str, Any]]:
        """Items of a body: ("attr", (name, value)) and ("block", (type, labels, items)).
        `opened`: the `{` of the block this body belongs to, `header` its type and labels."""
        items: list[tuple[str, Any]] = []
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok.kind == "eof":
                if closing and opened is not None:
                    # Where the block starts, not the end of the file: that is where the missing `}` belongs.
                    raise HCLError(f"{self.where}:{opened.line}: unclosed block {header}: "
                                   f"the {{ opened on line {opened.line} is never closed")
                return items
            if tok.kind == "punct" and tok.value == closing:
                self.pos += 1
                return items
            if tok.kind != "ident":
                raise self.fail("expected an argument or a block")
            name = self.next().value
            if self.peek().kind == "punct" and self.peek().value == "=":
                self.pos += 1
                items.append(("attr", (name, self.expression())))
                continue
            labels = []
            while self.peek().kind in ("string", "ident"):
                labels.append(self.next().value)
            if not (self.peek().kind == "punct" and self.peek().value == "{"):
                raise self.fail(f"expected {{ after {name}")
            brace = self.next()
            header = " ".join([name, *(f'"{label}"' for label in labels)])
            items.append(("block", (name, labels, self.body("}", brace, header))))

    def expression(self) -> Any:
        """A literal value, or _NOT_LITERAL for anything else (skipped up to its end)."""
        start = self.pos
        value = self.literal()
        end = self.peek()
        if value is not _NOT_LITERAL and (end.kind in ("newline", "eof") or (end.kind == "punct" and end.value in ",}]")):
            return value
        self.pos = start
        self.skip_expression()
        return _NOT_LITERAL

    def literal(self) -> Any:
        tok = self.next()
        if tok.kind == "string":
            return tok.value if tok.literal else _NOT_LITERAL
        if tok.kind == "number":
            return _number(tok.value)
        if tok.kind == "punct" and tok.value == "-" and self.peek().kind == "number":
            return -_number(self.next().value)
        if tok.kind == "ident" and tok.value in ("true", "false", "null"):
            if self.peek().kind == "punct" and self.peek().value in ".([":
                return _NOT_LITERAL
            return {"true": True, "false": False, "null": None}[tok.value]
        if tok.kind == "punct" and tok.value == "[":
            return self.collection("]", keyed=False)
        if tok.kind == "punct" and tok.value == "{":
            return self.collection("}", keyed=True)
        return _NOT_LITERAL

    def collection(self, closing: str, keyed: bool) -> Any:
        """A tuple `[a, b]` or an object `{k = v, "k2": v}` (newlines separate object items too)."""
        out: Any = {} if keyed else []
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok.kind == "punct" and tok.value == closing:
                self.pos += 1
                return out
            if keyed:
                key, sep = self.next(), self.next()
                if key.kind not in ("ident", "string") or not key.literal or not (sep.kind == "punct" and sep.value in "=:"):
                    return _NOT_LITERAL
            value = self.literal()
            if value is _NOT_LITERAL:
                return _NOT_LITERAL
            if keyed:
                out[key.value] = value
            else:
                out.append(value)
            if self.peek().kind == "punct" and self.peek().value == ",":
                self.pos += 1
            elif not keyed and not (self.peek().kind == "newline" or self.peek().value == closing):
                return _NOT_LITERAL

    def skip_expression(self) -> None:
        """Past an expression: up to a newline outside brackets."""
        depth = 0
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                return
            if tok.kind == "newline" and depth == 0:
                return
            if tok.kind == "punct" and tok.value in "{[(":
                depth += 1
            elif tok.kind == "punct" and tok.value in "}])":
                if depth == 0:
                    return  # the end of the enclosing block
                depth -= 1
            self.pos += 1


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def go_json(value: Any) -> str:
    """A default as coderd reports it: strings as they are, anything else as Go's json.Marshal."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""  # `default = null`: coderd records an empty default
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def parse_hcl(text: str, where: str) -> list[tuple[str, Any]]:
    return _Parser(text, where).body(None)


def _hcl_variables(items: list[tuple[str, Any]], where: str) -> tuple[list[Variable], list[str]]:
    """The declared variables, and a problem for every one whose default is not a literal."""
    out, problems = [], []
    for kind, item in items:
        if kind != "block" or item[0] != "variable" or len(item[1]) != 1:
            continue
        attrs = {i[0]: i[1] for k, i in item[2] if k == "attr"}
        default = attrs.get("default", _MISSING)
        if default is _NOT_LITERAL:
            problems.append(f"{where}: variable {item[1][0]!r}: the default is not a literal value")
            continue
        out.append(Variable(item[1][0], None if default is _MISSING else go_json(default),
                            attrs.get("sensitive") is True))
    return out, problems


def _hcl_external_auth(items: list[tuple[str, Any]]) -> list[str | None]:
    out: list[str | None] = []
    for kind, item in items:
        if kind == "block" and item[0] == "data" and item[1][:1] == ["coder_external_auth"]:
            ids = [i[1] for k, i in item[2] if k == "attr" and i[0] == "id"]
            out.append(ids[0] if ids and isinstance(ids[0], str) else None)  # None: not a literal
    return out


@dataclass(frozen=True)
class TerraformFacts:
    variables: tuple[Variable, ...]
    external_auth: tuple[str, ...]  # literal provider ids, in file order, without repeats
    unknown_external_auth: int = 0  # coder_external_auth blocks whose id is not a literal


def inspect(files: dict[str, bytes]) -> TerraformFacts:
    """Read the template's files (relative path -> content). Raises one HCLError holding the
    problems of every file, so a template with several mistakes is fixed in one round."""
    variables: list[Variable] = []
    auth: list[str] = []
    unknown = 0
    problems: list[str] = []
    for path in sorted(files):
        top_level = "/" not in path
        try:
            if path.endswith(".tf"):
                items = parse_hcl(files[path].decode("utf-8", errors="replace"), path)
                found_vars, not_literal = _hcl_variables(items, path) if top_level else ([], [])
                problems += not_literal
                found_auth = _hcl_external_auth(items)
            elif path.endswith(".tf.json"):
                found_vars, found_auth = _json_facts(files[path], path, top_level)
            else:
                continue
        except HCLError as exc:
            problems += exc.problems
            continue
        variables += found_vars
        unknown += sum(1 for a in found_auth if a is None)
        auth += [a for a in found_auth if a is not None and a not in auth]
    if problems:
        raise HCLError("; ".join(problems), problems)
    return TerraformFacts(tuple(variables), tuple(auth), unknown)


def _json_facts(data: bytes, path: str, top_level: bool) -> tuple[list[Variable], list[str | None]]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise HCLError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        return [], []
    variables = []
    if top_level:
        for name, spec in (doc.get("variable") or {}).items():
            spec = spec if isinstance(spec, dict) else {}
            default = go_json(spec["default"]) if "default" in spec else None
            variables.append(Variable(name, default, spec.get("sensitive") is True))
    blocks = (doc.get("data") or {}).get("coder_external_auth") or {}
    auth = [spec.get("id") if isinstance(spec, dict) and isinstance(spec.get("id"), str) else None
            for spec in blocks.values()]
    return variables, auth
