"""What the republisher needs to know from a template's Terraform, read without running it.

- The input variables the root module declares (top-level `.tf` / `.tf.json` files, as coderd's
  provisioner reads them with terraform-config-inspect) and their defaults, rendered the way
  coderd reports them: a string default as is, anything else as Go's json.Marshal would write it.
  Every one of them is sent with each new version, because coderd carries a value a version does
  not send over from the active version instead of resetting it (BEHAVIOR.md §11).
- The `id` of every `data "coder_external_auth"` block in any `.tf` file, modules included (the
  import's plan reports them and coderd fails the import when one is not configured, §11).

The syntax is python-hcl2's (a Lark grammar of HCL2); this module only turns its tree into blocks
and literal values. Terraform allows only literal values as variable defaults, which is all it
evaluates: anything else stays an `Expression` with its source text. docs/HCL.md compares this
with the hand-written reader it replaced, on the chart's templates and on adversarial inputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import hcl2
from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
from hcl2.rules.containers import ObjectRule, TupleRule
from hcl2.rules.expressions import ExprTermRule, UnaryOpRule
from hcl2.rules.literal_rules import FloatLitRule, IdentifierRule, IntLitRule, LiteralValueRule
from hcl2.rules.strings import HeredocTemplateRule, HeredocTrimTemplateRule, StringRule
from hcl2.utils import SerializationOptions, process_escape_sequences
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import Token


class HCLError(ValueError):
    """What cannot be read, each problem naming its file and line; `problems` holds every one
    found (one per file at most for syntax, since a parser cannot go on after one)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message)


@dataclass(frozen=True)
class Expression:
    """A value that is not a literal (a reference, a call, an interpolating string...): its
    source as python-hcl2 writes it back, comments dropped."""

    text: str


@dataclass(frozen=True)
class Block:
    type: str  # "" for a file's top level
    labels: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)  # literal values, or Expression
    blocks: tuple[Block, ...] = ()


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None  # None: no default (or `null`), the variable is required
    sensitive: bool = False


def parse(text: str, where: str) -> Block:
    """One `.tf` file's top level. Raises HCLError naming `where` and the line."""
    try:
        tree = hcl2.parses(text, discard_comments=True)
    except LarkError as exc:
        raise HCLError(f"{where}:{_syntax_problem(exc, text)}") from None
    return _block("", (), tree.body)


def _syntax_problem(exc: LarkError, text: str) -> str:
    """`LINE: what`, in the template author's terms rather than the grammar's."""
    if not isinstance(exc, UnexpectedInput):
        return f"1: cannot be parsed ({type(exc).__name__})"
    line = exc.line if exc.line > 0 else text.count("\n") + 1
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        if "DBLQUOTE" in exc.expected:  # a quoted string cannot span lines: it ran to the end
            return f"{_opened(exc, 'DBLQUOTE') or line}: unterminated string"
        opened = _opened(exc, "LBRACE")
        if opened is not None:
            # Where the block starts, not the end of the file: that is where the missing `}` belongs.
            header = text.splitlines()[opened - 1].split("{")[0].strip()
            return f"{opened}: unclosed block {header}: the {{ opened on line {opened} is never closed"
        return f"{line}: unexpected end of file"
    if isinstance(exc, UnexpectedCharacters):
        return f"{line}: unexpected character {exc.char!r}"
    found = str(exc.token).split("\n")[0] if isinstance(exc, UnexpectedToken) else ""
    if found.startswith("<<"):
        return f"{line}: unterminated heredoc {found}"
    if found.startswith("*") and text.splitlines()[line - 1][exc.column - 2:exc.column] == "/*":
        return f"{line}: unterminated comment"
    return f"{line}: unexpected {repr(found[:40]) if found.strip() else 'end of line'}"


def _opened(exc: UnexpectedToken, kind: str) -> int | None:
    """The line of the innermost `kind` token (`{`, `"`) still open when the file ended: the
    parser's stack holds it."""
    stack = exc.state.value_stack if exc.state is not None else []
    tokens = [v for v in stack if isinstance(v, Token) and v.type == kind]
    return tokens[-1].line if tokens else None


def _block(kind: str, labels: tuple[str, ...], body: BodyRule) -> Block:
    attributes: dict[str, Any] = {}
    blocks: list[Block] = []
    for item in body.children:
        if isinstance(item, AttributeRule):
            attributes[_name(item.identifier)] = value(item.expression)
        elif isinstance(item, BlockRule):
            names = [_label(label) for label in item.labels]
            blocks.append(_block(names[0], tuple(names[1:]), item.body))
    return Block(kind, labels, attributes, tuple(blocks))


def _name(identifier: IdentifierRule) -> str:
    return str(identifier.token.value)


def _label(rule: Any) -> str:
    if isinstance(rule, IdentifierRule):
        return _name(rule)
    found = value(rule)
    return found if isinstance(found, str) else str(found)


_SOURCE = SerializationOptions(with_comments=False, explicit_blocks=False, preserve_heredocs=True)


def value(rule: Any) -> Any:
    """A literal's Python value (str, int, float, bool, None, list, dict), else an Expression."""
    if isinstance(rule, ExprTermRule):
        return value(rule.expression)
    literal = _literal(rule)
    if literal is not _NOT_LITERAL:
        return literal
    source = rule.serialize(_SOURCE)
    text = source if isinstance(source, str) else json.dumps(source)
    return Expression(text[2:-1] if text.startswith("${") and text.endswith("}") else text)


_NOT_LITERAL = object()


def _literal(rule: Any) -> Any:
    if isinstance(rule, ExprTermRule):
        return _literal(rule.expression)
    if isinstance(rule, StringRule):
        return _string(rule)
    if isinstance(rule, HeredocTemplateRule):
        return _heredoc(str(rule.heredoc.value), trim=isinstance(rule, HeredocTrimTemplateRule))
    if isinstance(rule, (IntLitRule, FloatLitRule)):
        return _number(str(rule.token.value))
    if isinstance(rule, LiteralValueRule):
        return {"true": True, "false": False, "null": None}.get(str(rule.token.value), _NOT_LITERAL)
    if isinstance(rule, UnaryOpRule) and rule.operator.strip() == "-":
        operand = _literal(rule.expr_term)
        number = isinstance(operand, (int, float)) and not isinstance(operand, bool)
        return -operand if number else _NOT_LITERAL
    if isinstance(rule, TupleRule):
        items = [_literal(e) for e in rule.elements]
        return _NOT_LITERAL if _NOT_LITERAL in items else items
    if isinstance(rule, ObjectRule):
        return _object(rule)
    return _NOT_LITERAL


def _string(rule: StringRule) -> Any:
    out = []
    for part in rule.string_parts:
        content = part.content
        kind = content.lark_name()
        if kind == "STRING_CHARS":
            out.append(process_escape_sequences(str(content.value)))
        elif kind in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
            out.append(str(content.value)[1:])  # `$${` is a literal `${`, `%%{` a literal `%{`
        else:
            return _NOT_LITERAL  # an interpolation or a directive
    return "".join(out)


_HEREDOC = re.compile(r"<<-?([A-Za-z0-9_.-]+)\r?\n(.*?)^[ \t]*\1[ \t]*\r?\n?\Z", re.S | re.M)


def _heredoc(token: str, trim: bool) -> Any:
    """A heredoc's value as Terraform gives it: every line with its newline (python-hcl2's own
    serializer drops the last one), `<<-` removing the smallest indentation of the non-blank lines."""
    match = _HEREDOC.match(token)
    if match is None:
        return _NOT_LITERAL
    lines = match.group(2).splitlines()
    if trim:
        cut = min((len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()), default=0)
        lines = [ln[cut:] for ln in lines]
    body = "".join(ln + "\n" for ln in lines)
    if re.search(r"(?<![$%])[$%]\{", body):
        return _NOT_LITERAL  # a template: it interpolates
    return body.replace("$${", "${").replace("%%{", "%{")


def _object(rule: ObjectRule) -> Any:
    out: dict[str, Any] = {}
    for element in rule.elements:
        key_rule = element.key.value
        key = _name(key_rule) if isinstance(key_rule, IdentifierRule) else _literal(key_rule)
        item = _literal(element.expression)
        if key is _NOT_LITERAL or item is _NOT_LITERAL:
            return _NOT_LITERAL
        out[str(key)] = item
    return out


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 1e21 else number


def go_json(value: Any) -> str | None:
    """A default as coderd reports it: strings as they are, anything else as Go's json.Marshal;
    None for `null`, which terraform-config-inspect reports as no default (so: required)."""
    if isinstance(value, str) or value is None:
        return value
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hcl_variables(root: Block, where: str) -> tuple[list[Variable], list[str]]:
    """The declared variables, and a problem for every one whose default is not a literal."""
    out, problems = [], []
    for block in root.blocks:
        if block.type != "variable" or len(block.labels) != 1:
            continue
        default = block.attributes.get("default")
        if isinstance(default, Expression):
            problems.append(f"{where}: variable {block.labels[0]!r}: the default is not a literal value")
            continue
        out.append(Variable(block.labels[0], go_json(default), block.attributes.get("sensitive") is True))
    return out, problems


def _hcl_external_auth(root: Block) -> list[str | None]:
    return [b.attributes.get("id") if isinstance(b.attributes.get("id"), str) else None  # None: not a literal
            for b in root.blocks if b.type == "data" and b.labels[:1] == ("coder_external_auth",)]


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
                root = parse(files[path].decode("utf-8", errors="replace"), path)
                found_vars, not_literal = _hcl_variables(root, path) if top_level else ([], [])
                problems += not_literal
                found_auth = _hcl_external_auth(root)
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
            variables.append(Variable(name, go_json(spec.get("default")), spec.get("sensitive") is True))
    blocks = (doc.get("data") or {}).get("coder_external_auth") or {}
    auth = [spec.get("id") if isinstance(spec, dict) and isinstance(spec.get("id"), str) else None
            for spec in blocks.values()]
    return variables, auth
