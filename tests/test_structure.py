"""One house: the import structure of `cocu`, read from the code (tests/import_graph.py), and the
DVC dependencies that follow from it.

- No import cycle between files, and none between `cocu`'s subpackages (a subpackage is one node,
  each top-level module such as `cocu/config.py` its own).
- The low layers (config, provenance, schedule, tracking, launch) import no stage library.
- Every file a stage's script runs, transitively, is a dependency of that stage in dvc.yaml (a
  folder dependency covers the files under it), so a change anywhere re-runs what it affects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.import_graph import (closure, file_graph, find_cycle, imported_names, module_files, module_paths,
                                package_graph, resolve)

REPO = Path(__file__).resolve().parents[1]
GRAPH, BROKEN = file_graph(REPO)
LOW_LAYERS = {"cocu.config": set(), "cocu.provenance": set(), "cocu.schedule": set(),
              "cocu.tracking": {"cocu.config"}, "cocu.launch": {"cocu.config"}}


def test_graph_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cocu"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (pkg / "c.py").write_text("import cocu.sub.b\nfrom cocu import sub\nfrom cocu.gone import x\n")
    graph, broken = file_graph(tmp_path)
    assert graph == {"cocu": set(), "cocu.sub": {"cocu.sub.b"}, "cocu.sub.b": {"cocu.c"},
                     "cocu.c": {"cocu", "cocu.sub", "cocu.sub.b"}}
    assert broken == {"cocu.c": {"cocu.gone"}}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] == "cocu.c" and "cocu.sub.b" in cycle
    assert all(b in graph[a] for a, b in zip(cycle, cycle[1:]))
    assert find_cycle(package_graph(graph)) == ["cocu.c", "cocu.sub", "cocu.c"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_of_cocu_names_a_module() -> None:
    assert not BROKEN, f"imports of names that are no module of cocu: {BROKEN}"


def test_no_import_cycle_between_files() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_between_subpackages() -> None:
    cycle = find_cycle(package_graph(GRAPH))
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("layer", sorted(LOW_LAYERS))
def test_low_layers_import_no_stage_library(layer: str) -> None:
    imports = package_graph(GRAPH)[layer]
    assert imports <= LOW_LAYERS[layer], f"{layer} imports {sorted(imports - LOW_LAYERS[layer])}"


def test_package_root_runs_no_code() -> None:
    """`cocu/__init__.py` is in no stage's deps: it holds a docstring and constants, nothing else."""
    body = ast.parse((REPO / "cocu" / "__init__.py").read_text()).body
    assert all(isinstance(n, (ast.Expr, ast.Assign)) and isinstance(n.value, ast.Constant) for n in body)


def _stage_runs(body: dict) -> set[str]:
    """Repo-relative files (and package data) the stage's command runs, transitively."""
    words = body["cmd"].split()
    module = words[2] if words[1] == "-m" else None
    script = REPO / (str(Path(*module.split("."))) + ".py" if module else words[1])
    hits, _ = resolve(imported_names(script, module), module_files(REPO))
    return module_paths(closure(hits, GRAPH), REPO) - {"cocu/__init__.py"}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_file_it_runs_transitively(stage: str) -> None:
    body = STAGES[stage]
    deps = [str(d) for d in body["deps"]]
    missing = sorted(p for p in _stage_runs(body)
                     if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not depend on them"


def test_transitive_deps_see_what_direct_imports_miss() -> None:
    """The case that the direct-import check let through: evaluate runs cocu/data/templates.py."""
    assert "cocu/data/templates.py" in _stage_runs(STAGES["evaluate"])


def _documented_graph() -> dict[str, set[str]]:
    """docs/architecture.md's table between its structure markers: node -> the nodes it imports."""
    text = (REPO / "docs/architecture.md").read_text()
    table = text.split("<!-- structure:begin -->")[1].split("<!-- structure:end -->")[0]
    out = {}
    for line in table.strip().splitlines()[2:]:
        node, _, imports = [c.strip() for c in line.strip("|").split("|")]
        out[node.strip("`")] = set() if imports == "—" else {f"cocu.{n.strip()}" for n in imports.split(",")}
    return out


def test_docs_describe_the_import_structure_as_it_is() -> None:
    graph = {k: v - {"cocu"} for k, v in package_graph(GRAPH).items() if k != "cocu"}  # the root: a docstring
    assert _documented_graph() == graph


def test_stage_libraries_import_in_one_direction() -> None:
    """docs/architecture.md: each stage library imports only the libraries listed after it."""
    order = ["cocu.reports", "cocu.eval", "cocu.training", "cocu.clip", "cocu.concepts", "cocu.data", "cocu.models"]
    graph = package_graph(GRAPH)
    for i, node in enumerate(order):
        assert not graph[node] & set(order[: i + 1]), f"{node} imports {sorted(graph[node] & set(order[:i]))}"


def _imports_from_cocu(path: Path) -> set[tuple[str, str]]:
    """(module, name) of every `from cocu.x import name` in a file, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
            and node.module.split(".")[0] == "cocu" for alias in node.names}


OUTSIDE = sorted(p.relative_to(REPO).as_posix() for folder in ("pipelines", "benchmarks", "scripts")
                 for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("rel", OUTSIDE)
def test_scripts_import_what_exists(rel: str) -> None:
    """The stage scripts, speed benchmarks and helper scripts (run by hand, not all by a test) import
    only modules and names that exist: a module moved in the library is caught here."""
    import importlib

    missing = []
    for module, name in sorted(_imports_from_cocu(REPO / rel)):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            missing.append(module)
            continue
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{rel} imports what does not exist: {missing}"
