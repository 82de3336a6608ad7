"""The import graph of the `cocu` package, read from the source with `ast` (nothing is imported).

Every import counts: at module level and inside functions, absolute and relative, `import a.b`
and `from a import b` (an import of `a.b` when that is a module, else of `a`). Nodes of the
file graph are modules (`cocu.data.shards`; a package's `__init__.py` is the package's name).
Nodes of the package graph are `cocu`'s subpackages (`cocu.data`) and its top-level modules
(`cocu.config`), each counted as one.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "cocu"
# `Path(__file__).parent / "name"`: a folder or file of package data that a module reads
_PACKAGE_DATA = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?\.parent\s*/\s*[\"']([^\"']+)[\"']")


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: its file} for every `.py` file of `root/package`."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_names(path: Path, module: str | None = None) -> tuple[set[str], set[str]]:
    """(modules a file imports anywhere, candidates): `import a.b` and `from a import b` import
    `a.b` and `a`; `b` is a candidate, a module `a.b` only if there is one.

    `module` (the file's own dotted name) resolves relative imports; without it they are errors.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    required: set[str] = set()
    candidates: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            required |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    raise ValueError(f"{path}: relative import outside a package")
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            required.add(source)
            candidates |= {f"{source}.{alias.name}" for alias in node.names if alias.name != "*"}
    return required, candidates


def resolve(names: tuple[set[str], set[str]], modules: Mapping[str, Path],
            package: str = PACKAGE) -> tuple[set[str], set[str]]:
    """(modules of `package` that `imported_names(...)` imports, imported names under `package`
    that are no module: stale imports)."""
    required, candidates = names
    ours = {n for n in required if n == package or n.startswith(package + ".")}
    return (ours & set(modules)) | (candidates & set(modules)), ours - set(modules)


def file_graph(root: Path, package: str = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({module: modules of the package it imports}, {module: imported names that are no module})."""
    modules = module_files(root, package)
    graph, broken = {}, {}
    for name, path in modules.items():
        hits, unknown = resolve(imported_names(path, name), modules, package)
        graph[name] = hits - {name}
        if unknown:
            broken[name] = unknown
    return graph, broken


def node_of(module: str, package: str = PACKAGE) -> str:
    """The package-graph node of a module: `cocu.<subpackage>` or the top-level module itself."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: Mapping[str, set[str]], package: str = PACKAGE) -> dict[str, set[str]]:
    """Edges between nodes (`node_of`) of the file graph, without self-loops."""
    out: dict[str, set[str]] = {node_of(m, package): set() for m in graph}
    for a, targets in graph.items():
        out[node_of(a, package)] |= {node_of(b, package) for b in targets} - {node_of(a, package)}
    return out


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle `[a, b, ..., a]` of a directed graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def closure(start: Iterable[str], graph: Mapping[str, set[str]], package: str = PACKAGE) -> set[str]:
    """Every module that importing `start` runs: their imports, transitively, and the packages
    (`__init__.py`) above each of them."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += graph.get(m, ())
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen


def module_paths(modules: Iterable[str], root: Path, package: str = PACKAGE) -> set[str]:
    """Repo-relative paths of the modules' files and of the package data each reads."""
    files = module_files(root, package)
    out = set()
    for m in modules:
        path = files[m]
        out.add(path.relative_to(root).as_posix())
        for data in _PACKAGE_DATA.findall(path.read_text(encoding="utf-8")):
            out.add((path.parent / data).relative_to(root).as_posix())
    return out
