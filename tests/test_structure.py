"""One way to do each thing, checked on the source of the jobs package (AST and text, no servers).

- One client per system: only the Coder client (jobs/coder.py, its session and its reading of
  coderd's answers) touches httpx and coderd's paths, only jobs/kube.py the `kubernetes` package;
  they alone page, read the `Date` header, and know coderd's texts.
- One retry policy: tenacity, in jobs/retry.py, is the only thing that repeats or waits.
- One plan type: every job plans into jobs.plan.Plan, from what it observed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from pathlib import Path

import pytest

from jobs.plan import Action, Plan

JOBS = Path(__file__).resolve().parent.parent / "jobs"
MODULES = sorted(JOBS.glob("*.py"))
CODER = (JOBS / "coder.py", JOBS / "coder_session.py", JOBS / "coder_answers.py")
KUBE, RETRY = JOBS / "kube.py", JOBS / "retry.py"


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, TYPE_CHECKING blocks and function bodies included."""
    names: set[str] = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def strings(path: Path) -> list[str]:
    """String literals that are not docstrings (f-string parts included)."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree(path))
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree(path))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def others(*owners: Path) -> list[Path]:
    return [m for m in MODULES if m not in owners]


def name(path: Path) -> str:
    return path.name


# ---------------------------------------------------------------------------- one client per system


@pytest.mark.parametrize("module", others(*CODER), ids=name)
def test_only_the_coder_client_speaks_http_and_names_coderds_paths(module):
    assert "httpx" not in imported(module)
    assert [s for s in strings(module) if "/api/v2" in s] == []  # coderd's; /api/v1 is the Kubernetes core API


@pytest.mark.parametrize("module", others(KUBE), ids=name)
def test_only_the_kubernetes_helper_imports_the_kubernetes_client(module):
    assert not {"kubernetes", "urllib3"} & imported(module)


@pytest.mark.parametrize("module", others(*CODER, KUBE), ids=name)
def test_paging_and_dates_are_the_clients_business(module):
    """Offsets and continue tokens, and HTTP-date parsing (Date, Retry-After), live in the clients."""
    assert "email" not in imported(module)
    text = module.read_text()
    assert "parsedate" not in text and "_continue" not in text
    assert [s for s in strings(module) if s in ("offset", "continue")] == []


@pytest.mark.parametrize("module", others(*CODER), ids=name)
def test_coderds_error_texts_are_matched_in_the_client_only(module):
    """No `"some text" in <an error's message, detail or text>` outside the Coder client, directly or
    through a local variable made from them: what an answer of coderd means is a predicate there
    (is_transient, refused_for_setup_token, ...)."""
    looked_into = {"message", "detail", "text", "error", "field_names"}

    def reads_texts(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Attribute) and n.attr in looked_into for n in ast.walk(node))

    for function in [n for n in ast.walk(tree(module)) if isinstance(n, (ast.FunctionDef, ast.Lambda))]:
        texts = {t.id for n in ast.walk(function) if isinstance(n, ast.Assign) and reads_texts(n.value)
                 for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(function):
            if (isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
                    and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)):
                for c in node.comparators:
                    assert not (reads_texts(c) or (isinstance(c, ast.Name) and c.id in texts)), (
                        f"{module.name}:{node.lineno} matches an error's text")


# ---------------------------------------------------------------------------- one retry policy


def _loop_body(loop: ast.While | ast.For) -> list[ast.AST]:
    """The statements of a loop, not those of a loop or function nested in it."""
    out, todo = [], list(loop.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.For, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


@pytest.mark.parametrize("module", others(RETRY), ids=name)
def test_tenacity_in_jobs_retry_is_the_only_retry_mechanism(module):
    """Every retry that backs off must wait, and nothing outside jobs/retry.py can: no module
    imports tenacity or `random` (jitter) or calls a `sleep`. And nothing repeats by hand without
    waiting: a hand-written retry is a loop that catches an exception and goes round again, so no
    `while` loop (nor a `for` over `range`) holds a `try` with an `except`. Loops over data (pages,
    items, futures) are `for` loops over it; scanners and parsers (`while i < n`) catch nothing."""
    assert not {"tenacity", "random"} & imported(module)
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            assert called != "sleep", f"{module.name}:{node.lineno} sleeps"
        counted = isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and getattr(node.iter.func, "id", "") == "range"
        if isinstance(node, ast.While) or counted:
            assert not [n for n in _loop_body(node) if isinstance(n, ast.Try) and n.handlers], (
                f"{module.name}:{node.lineno}: a loop that catches an exception and goes round again is a hand-written retry")


def test_the_retry_module_uses_tenacity():
    assert "tenacity" in imported(RETRY)


# ---------------------------------------------------------------------------- one plan type


PLANNERS = [("jobs.bootstrap_admin", "plan"), ("jobs.republish", "plan"), ("jobs.sync_external_auth", "plan"),
            ("jobs.reap_plan", "plan"), ("jobs.doctor", "drift")]


@pytest.mark.parametrize(("module", "function"), PLANNERS)
def test_every_job_plans_into_the_one_plan_type_from_observed_state(module, function):
    planner = getattr(importlib.import_module(module), function)
    assert typing.get_origin(typing.get_type_hints(planner)["return"]) is Plan  # a Plan of the job's own actions
    assert not {"client", "api"} & set(inspect.signature(planner).parameters)  # no I/O handle: pure


def test_what_apply_reads_from_an_action_is_typed():
    """Each action kind is a class whose fields say what apply needs; none of them is `Any`
    (mypy --strict, run by tests/test_lint.py, proves that apply handles every kind)."""
    for module, _ in PLANNERS:
        importlib.import_module(module)
    pending, kinds = [Action], []
    while pending:
        cls = pending.pop()
        kinds.append(cls)
        pending += cls.__subclasses__()
    assert len(kinds) > 10
    untyped = [(cls.__qualname__, name) for cls in kinds for name, hint in typing.get_type_hints(cls).items()
               if hint is typing.Any or typing.Any in typing.get_args(hint)]
    assert untyped == []


def test_there_is_one_plan_and_one_action_class():
    defined = [(m.name, n.name) for m in MODULES for n in ast.walk(tree(m))
               if isinstance(n, ast.ClassDef) and n.name in ("Plan", "Action")]
    assert defined == [("plan.py", "Action"), ("plan.py", "Plan")]


def test_the_pure_reap_plan_needs_no_client():
    assert not {"jobs.coder", "jobs.kube"} & {n.module for n in tree(JOBS / "reap_plan.py").body
                                               if isinstance(n, ast.ImportFrom)}


# ---------------------------------------------------------------------------- jobs/ holds only what the jobs run

ROOT = JOBS.parent
ENTRY_POINTS = ("jobs.__main__", "jobs.cli")  # `python -m jobs` and pyproject's `coder-jobs` script


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def runtime_imports(path: Path) -> set[str]:
    """Full names of the modules `path` imports when it runs: function bodies included,
    `if TYPE_CHECKING:` blocks left out (only a type checker follows those)."""
    names: set[str] = set()
    todo: list[ast.AST] = [tree(path)]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from jobs import log`
        todo.extend(ast.iter_child_nodes(node))
    return names


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (or names, as cli.py names the jobs)."""
    paths = {module_name(p): p for p in sorted((ROOT / package).glob("*.py"))}
    edges = {}
    for name, path in paths.items():
        named = runtime_imports(path) | {s for s in strings(path) if s in paths}
        edges[name] = {m for m in named if m in paths and m != name}
    return edges


def imported_names(path: Path, package: str) -> set[tuple[str, str]]:
    """(module, name) for every name `path` takes from `package`: `from jobs.m import x` and
    `from jobs import m` ... `m.x`."""
    found, aliases = set(), {}
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{package}."):
            found.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == package:
            aliases.update({alias.asname or alias.name: f"{package}.{alias.name}" for alias in node.names})
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.add((aliases[node.value.id], node.attr))
    return found


def uses_in_jobs(name: str) -> int:
    """How often the jobs package mentions `name`, its own definition left out."""
    count = 0
    for path in MODULES:
        for node in ast.walk(tree(path)):
            count += (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)
    return count


def test_every_jobs_module_is_run_by_some_job():
    """Reachable from the entry points: no module of jobs/ is there only for the fake, the demo or the tests."""
    edges = graph("jobs")
    seen, todo = set(), [*ENTRY_POINTS, "jobs"]  # the package itself runs first
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    assert sorted(set(edges) - seen) == []


@pytest.mark.parametrize("module", MODULES, ids=name)
def test_jobs_imports_neither_the_fakes_nor_the_demo_nor_the_tests(module):
    assert not {"fakes", "demo", "tests"} & imported(module)


@pytest.mark.parametrize("user", sorted([*(ROOT / "fakes").glob("*.py"), *(ROOT / "demo").glob("*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_what_the_fakes_and_the_demo_take_from_jobs_the_jobs_use_too(user):
    """A function the fake alone calls (coderd's own password error text, the console rendering of a
    JSON log for the demo) belongs to the fake or the demo, not to jobs/."""
    only_theirs = [f"{module}.{taken}" for module, taken in sorted(imported_names(user, "jobs"))
                   if taken != "*" and f"{module}.{taken}" not in graph("jobs") and uses_in_jobs(taken) == 0]
    assert only_theirs == []


@pytest.mark.parametrize("package", ["fakes", "demo"])
def test_there_is_no_import_circle(package):
    edges = graph(package)

    def circle_from(start: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(edges[start]):
            if nxt in path:
                return (*path[path.index(nxt):], nxt)
            found = circle_from(nxt, (*path, nxt))
            if found:
                return found
        return None

    assert [c for m in sorted(edges) if (c := circle_from(m, (m,)))] == []
