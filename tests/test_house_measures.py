"""A reader's limits on the source (issue 13), read from the files: sizes, function lengths, import
circles and the error tree. Each check names what exceeds its limit, so the fix is to move a concern out.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_agent", "trainer", "simulator", "dashboards", "gruwatch")
DAEMON_MAX_LINES = 500
FILE_MAX_LINES = 600
AGENT_FUNCTION_MAX_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every source file of the five packages."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_the_daemon_reads_in_one_sitting() -> None:
    assert _lines(REPO / "edge_agent" / "daemon.py") <= DAEMON_MAX_LINES


def test_no_source_file_over_the_limit() -> None:
    sizes = {str(p.relative_to(REPO)): _lines(p) for p in _modules().values()}
    assert sizes, "no source files found"
    assert {f: n for f, n in sizes.items() if n > FILE_MAX_LINES} == {}


def test_no_agent_function_over_the_limit() -> None:
    long: dict[str, int] = {}
    for path in (REPO / "edge_agent").rglob("*.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > AGENT_FUNCTION_MAX_LINES:
                    long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = n
    assert long == {}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its body (lazy imports included), except under
    `if TYPE_CHECKING:`."""
    out: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = name.split(".")[: len(name.split(".")) - child.level + is_package]
                    base = ".".join([*parent, base] if base else parent)
                for a in child.names:
                    out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
            visit(child)

    visit(_tree(path))
    return {m for m in out if m in modules and m != name}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group: list[str] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_circle_finder_sees_a_circle() -> None:
    # Control: a → b → c → a is one circle; d alone is none.
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 100, "the import graph looks empty: the parser missed imports"
    assert _circles(graph) == []


def test_every_error_class_derives_from_gruwatch_error() -> None:
    # A class is an error class when a base's name ends in Error or Exception; private ones (leading
    # underscore) never reach a user. Base names are resolved by name across the five packages.
    bases: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for path in _modules().values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                names = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
                if any(n.endswith(("Error", "Exception")) for n in names):
                    bases[node.name] = names
                    where[node.name] = f"{path.relative_to(REPO)}:{node.lineno}"
    assert "GruwatchError" in bases
    tree = {"GruwatchError"}
    grown = True
    while grown:
        before = len(tree)
        tree |= {c for c, names in bases.items() if tree.intersection(names)}
        grown = len(tree) > before
    outside = {where[c] + " " + c for c in bases if c not in tree and not c.startswith("_")}
    assert len(tree) > 5
    assert outside == set()
