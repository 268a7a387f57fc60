"""Compare the HCL reader the jobs use (python-hcl2, jobs/terraform_files.py) with the hand-written
one it replaced (jobs/terraform_files.py at commit 2bd8a5c), as docs/HCL.md reports.

    .venv/bin/python docs/hcl_compare.py

Each case states what Terraform (terraform-config-inspect, which coderd's provisioner uses) reads:
a variable's default as coderd reports it, None for "required", NOT_LITERAL for a default it
cannot evaluate; or the line an error must name. Then both readers' answers, and their CPU time on
the chart's two templates.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs import terraform_files as new  # noqa: E402
from jobs.archive import collect_files  # noqa: E402

OLD_COMMIT = "2bd8a5c"
NOT_LITERAL = "<not a literal>"


def load_old():
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:jobs/terraform_files.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("old_terraform_files", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, "old_terraform_files.py", "exec"), module.__dict__)
    return module


def var(default_src: str) -> str:
    return f'variable "v" {{\n  default = {default_src}\n}}\n'


# (name, main.tf, expected): expected is the default string, None (required), NOT_LITERAL,
# or ("error", line)
CASES = [
    ("heredoc", var("<<EOT\na\n  b\nEOT"), "a\n  b\n"),
    ("indented heredoc", var("<<-EOT\n    a\n      b\n    EOT"), "a\n  b\n"),
    ("indented heredoc, tabs", var("<<-EOT\n\t\ta\n\t\tb\n\tEOT"), "a\nb\n"),
    ("heredoc interpolating", var("<<EOT\nhi ${var.x}\nEOT"), NOT_LITERAL),
    ("heredoc escaped interpolation", var("<<EOT\nhi $${x}\nEOT"), "hi ${x}\n"),
    ("heredoc with dotted marker", var("<<END.X\na\nEND.X"), ("error", 2)),
    ("empty heredoc", var("<<EOT\nEOT"), ""),
    ("string with braces", var('"{ } }{"'), "{ } }{"),
    ("string with escapes", var('"a\\"b\\\\c\\n\\u00e9"'), 'a"b\\c\né'),
    ("string interpolating", var('"a ${var.x} b"'), NOT_LITERAL),
    ("string with a directive", var('"%{ if true }x%{ endif }"'), NOT_LITERAL),
    ("escaped interpolation and directive", var('"$${a} %%{b}"'), "${a} %{b}"),
    ("number", var("-2.5"), "-2.5"),
    ("exponent", var("1e3"), "1000"),
    ("negative int", var("-7"), "-7"),
    ("parenthesised", var("(1)"), "1"),
    ("arithmetic", var("1 + 2"), "3"),
    ("bool", var("true"), "true"),
    ("null", var("null"), None),
    ("tuple, trailing comma, newlines", var('["a",\n  "b",\n]'), '["a","b"]'),
    ("object, both separators", var('{\n  b = 1\n  "a": [true, null]\n}'), '{"a":[true,null],"b":1}'),
    ("object with a reference", var("{ a = var.x }"), NOT_LITERAL),
    ("reference", var("local.y"), NOT_LITERAL),
    ("function call", var("max(1, 2)"), NOT_LITERAL),
    ("for expression", var("[for s in [\"a\"] : upper(s)]"), NOT_LITERAL),
    ("comments of all three kinds", '# a { "\n// b }\n/* c {\n " */\n' + var('"x" # d {'), "x"),
    ("nested blocks with braces in strings",
     'variable "v" {\n  default = "x"\n  validation {\n    condition = var.v != "}"\n'
     '    error_message = "${var.v} {"\n  }\n}\n', "x"),
    ("identifier label", "variable v {\n  default = 1\n}\n", "1"),
    ("one-line block", 'variable "v" { default = "x" }\n', "x"),
    ("CRLF line endings", var('"x"').replace("\n", "\r\n"), "x"),
    ("unclosed block, opened on line 52", "".join(f"# {n}\n" for n in range(51)) + 'resource "a" "b" {\n  x = 1\n\n',
     ("error", 52)),
    ("unclosed nested block", 'variable "v" {\n  validation {\n    condition = true\n}\n', ("error", 1)),
    ("unterminated string", 'variable "v" {\n  default = "abc\n}\n', ("error", 2)),
    ("unterminated heredoc", 'x = 1\ny = <<EOT\nabc\n', ("error", 2)),
    ("unterminated comment", 'x = 1\n/* abc\n', ("error", 2)),
    ("stray closing brace", 'x = 1\n}\n', ("error", 2)),
    ("missing comma in tuple", 'x = [1\n2]\n', ("error", 2)),
]


def answer(reader, text: str):
    try:
        facts = reader.inspect({"main.tf": text.encode()})
    except reader.HCLError as exc:
        if "not a literal" in str(exc):
            return NOT_LITERAL
        return ("error", int(exc.problems[0].split(":")[1]))
    except Exception as exc:  # noqa: BLE001 - a crash is an answer too
        return ("crash", type(exc).__name__)
    found = {v.name: v.default for v in facts.variables}
    return found.get("v", "<no variable>")


def mark(got, expected) -> str:
    return ("✓ " if got == expected else "✗ ") + repr(got)


def cpu(reader, files, rounds: int = 5) -> float:
    start = time.process_time()
    for _ in range(rounds):
        reader.inspect(files)
    return (time.process_time() - start) / rounds


def main() -> int:
    old = load_old()
    rows, right = [], {"old": 0, "new": 0}
    for name, text, expected in CASES:
        got = {"old": answer(old, text), "new": answer(new, text)}
        for key in right:
            right[key] += got[key] == expected
        rows.append((name, expected, got["old"], got["new"]))
    print("| case | Terraform | hand-written | python-hcl2 |\n|---|---|---|---|")
    for name, expected, o, n in rows:
        print(f"| {name} | {expected!r} | {mark(o, expected)} | {mark(n, expected)} |")
    print(f"\nagree with Terraform: hand-written {right['old']}/{len(CASES)}, python-hcl2 {right['new']}/{len(CASES)}")
    new.parse("", "warm")  # python-hcl2 loads its parser tables once per process
    for template in ("ameide-dev", "ameide-gitops"):
        files = collect_files(ROOT / "chart/files/coder-templates" / template)
        same = old.inspect(files) == new.inspect(files) or (
            [(v.name, v.default, v.sensitive) for v in old.inspect(files).variables]
            == [(v.name, v.default, v.sensitive) for v in new.inspect(files).variables]
            and old.inspect(files).external_auth == new.inspect(files).external_auth)
        lines = sum(v.count(b"\n") for k, v in files.items() if k.endswith(".tf"))
        print(f"{template}: {lines} lines of .tf, same facts: {same}, CPU per read: "
              f"hand-written {cpu(old, files) * 1000:.0f} ms, python-hcl2 {cpu(new, files) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
