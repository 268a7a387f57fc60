"""Top-level blocks of `terraform fmt`-formatted .tf files, as text.

HCL parsers give values, not source; a few tests need the source of one block (what a
Deployment references) or a module copy without some blocks (the Terraform runs that have only
the coder provider). In fmt-formatted files a top-level block opens at column 0 with a line
ending in `{` and closes at the next line that is exactly `}` (heredoc bodies are indented, and
test_templates_are_terraform_fmt_clean keeps the files formatted).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_OPEN = re.compile(r'^(?P<kind>resource|data|module|variable|output|locals|provider|terraform|check|moved|import)\b'
                   r'(?P<labels>(?:\s+"[^"]*")*)\s*\{\s*$')


@dataclass(frozen=True)
class Block:
    kind: str
    labels: tuple[str, ...]
    start: int  # index of the opening line
    end: int  # index of the closing "}" line
    text: str

    @property
    def address(self) -> str:
        return ".".join((self.kind, *self.labels)) if self.kind in ("data", "module") else ".".join(self.labels) or self.kind


def blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j] != "}":
            if _OPEN.match(lines[j]):
                raise ValueError(f"block at line {i + 1} is not closed before line {j + 1} (not fmt-formatted?)")
            j += 1
        if j == len(lines):
            raise ValueError(f"block at line {i + 1} is never closed")
        labels = tuple(re.findall(r'"([^"]*)"', m.group("labels")))
        out.append(Block(m.group("kind"), labels, i, j, "\n".join(lines[i:j + 1]) + "\n"))
        i = j + 1
    return out


def block_text(directory: Path, kind: str, *labels: str) -> str:
    """Source of the one top-level block `kind "label"...` among the directory's .tf files."""
    found = [b.text for p in sorted(directory.glob("*.tf")) for b in blocks(p.read_text(encoding="utf-8"))
             if b.kind == kind and b.labels == labels]
    assert len(found) == 1, f"{kind} {labels} found {len(found)} times in {directory}"
    return found[0]


def without_blocks(text: str, drop: Callable[[Block], bool]) -> str:
    """The text with every top-level block for which `drop` is true removed."""
    lines = text.splitlines()
    keep = [True] * len(lines)
    for b in blocks(text):
        if drop(b):
            for k in range(b.start, b.end + 1):
                keep[k] = False
    return "\n".join(line for line, k in zip(lines, keep) if k) + "\n"
