"""docs/BEHAVIOR.md: every `BEHAVIOR.md §N` cited in the code resolves in a clone, in our own words.

The citations point at coderd's behaviour as ../shared/coder-api/BEHAVIOR.md records it; that
file lives outside the repository, so docs/BEHAVIOR.md restates the facts the jobs and the fake
rely on, under the same section numbers. It must not copy the shared file's prose: outside code
spans (exact strings and paths are facts), no run of 12 words may appear in both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DOC = REPO / "docs" / "BEHAVIOR.md"
SHARED = REPO.parent / "shared" / "coder-api" / "BEHAVIOR.md"
CITING = ("jobs", "fakes", "tests")
RUN = 12

# `BEHAVIOR.md §7`, `BEHAVIOR §11`, `BEHAVIOR.md §2, §11`, and a citation broken across a
# comment or docstring line (`BEHAVIOR.md\n# §11`).
_CITATION = re.compile(r"BEHAVIOR(?:\.md)?[\s#]*(§\d+(?:\.\d+)*(?:\s*(?:,|and)\s*§\d+(?:\.\d+)*)*)")
# `BEHAVIOR.md "Conventions"`, `BEHAVIOR.md §7 "Guidance for a reaper"`: a named part.
_NAMED = re.compile(r"BEHAVIOR(?:\.md)?[\s#]*(?:§[\d.]+\s*)?,?\s*\"([^\"]+)\"")
_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)
_CODE = re.compile(r"`[^`\n]*`")


def _sources() -> list[Path]:
    this = Path(__file__).resolve()
    return sorted(p for d in CITING for p in (REPO / d).rglob("*.py") if p.resolve() != this)


def citations() -> dict[str, list[str]]:
    """Section number -> the files citing it."""
    found: dict[str, list[str]] = {}
    for path in _sources():
        for match in _CITATION.finditer(path.read_text(encoding="utf-8")):
            for number in _SECTION.findall(match.group(1)):
                found.setdefault(number, []).append(str(path.relative_to(REPO)))
    return found


def named_citations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _sources():
        for name in _NAMED.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def headings(text: str) -> set[str]:
    return set(_HEADING.findall(text))


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower().replace("↔", " and ")).replace(" and ", " ").strip()


def shared_runs(ours: str, theirs: str, n: int = RUN) -> set[tuple[str, ...]]:
    """Runs of n words that both texts contain, code spans excluded (a span breaks a run)."""

    def grams(text: str) -> set[tuple[str, ...]]:
        out: set[tuple[str, ...]] = set()
        for part in _CODE.split(text):
            words = re.findall(r"[a-z0-9']+", part.lower())
            out.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        return out

    return grams(ours) & grams(theirs)


def test_the_code_cites_sections() -> None:
    # Guards the pattern itself: if it stopped matching, the next test would pass vacuously.
    found = citations()
    assert {"1", "2", "7", "11"} <= set(found), found


def test_every_cited_section_has_a_heading() -> None:
    have = headings(DOC.read_text(encoding="utf-8"))
    missing = {n: files for n, files in citations().items() if n not in have}
    assert missing == {}, f"docs/BEHAVIOR.md has no heading for {missing}"


def test_every_named_part_has_a_heading() -> None:
    text = DOC.read_text(encoding="utf-8")
    titles = {_normalise(t) for t in re.findall(r"^#{2,4}\s+(.*)$", text, re.MULTILINE)}
    missing = {name: files for name, files in named_citations().items()
               if not any(_normalise(name) in t for t in titles)}
    assert missing == {}, f"docs/BEHAVIOR.md has no heading for {missing}"


def test_numbering_follows_the_shared_file() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not on this machine")
    theirs = {n for n in headings(SHARED.read_text(encoding="utf-8")) if "." not in n}
    assert theirs <= headings(DOC.read_text(encoding="utf-8"))


def test_the_newer_release_modules_cite_section_12() -> None:
    cited = citations().get("12", [])
    assert {"jobs/coder_versions.py", "fakes/coderd_versions.py"} <= set(cited), cited


def test_written_in_our_own_words() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is not on this machine")
    common = shared_runs(DOC.read_text(encoding="utf-8"), SHARED.read_text(encoding="utf-8"))
    assert common == set(), "copied from the shared file: " + "; ".join(" ".join(r) for r in sorted(common)[:5])


def test_the_overlap_check_sees_a_copy() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    assert shared_runs(text, "zero " + text)
    assert not shared_runs(text, text.replace("seven", "`seven`"))
