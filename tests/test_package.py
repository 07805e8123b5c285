"""The package's shape: every module imports on its own, no import cycles, the public
surface is declared."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sluice
from sluice import cli

# __main__ runs the CLI when imported, so it is exercised by the --help test instead.
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(sluice.__path__, "sluice.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_alone(name: str) -> None:
    """A fresh interpreter per module catches import cycles that a shared one hides."""
    subprocess.run([sys.executable, "-c", f"import {name}"], check=True, timeout=60)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_declares_its_public_names(name: str) -> None:
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for exported in module.__all__:
        assert hasattr(module, exported), f"{name}.__all__ names missing {exported}"


def test_top_level_exports_the_error_tree() -> None:
    assert set(sluice.__all__) >= {"SluiceError", "ProtocolError", "RecordError", "ConfigError"}


def test_every_subcommand_has_help() -> None:
    for command in cli.COMMANDS:
        out = subprocess.run([sys.executable, "-m", "sluice", command, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "SLUICE_" in out.stdout



def imports_of(path: Path, name: str) -> set[str]:
    """The modules (and module.name candidates) ``name`` imports anywhere in its body: an
    import inside a function is still a dependency, only a later one. ``if TYPE_CHECKING:``
    blocks are left out (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node) for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.dump(block.test)
        for node in ast.walk(block)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def import_graph(paths: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``paths`` it imports. A package's ``__init__`` importing its
    own modules, and a module importing its package, are how packages work: not edges."""
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        graph[name] = {
            target for target in imports_of(path, name)
            if target in paths and target != name
            and not name.startswith(target + ".") and not target.startswith(name + ".")
        }
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first walk of ``graph`` meets, each as the modules on it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles_among_sluice_modules() -> None:
    """A cycle hidden by an import inside a function is a layout to fix (move the shared
    piece down a floor), so imports anywhere in a module count."""
    paths = {name: Path(str(importlib.util.find_spec(name).origin))  # type: ignore[union-attr]
             for name in ["sluice", *MODULES]}
    # A compiled module (sluice.parser._measurements) imports nothing of sluice.
    paths = {name: path for name, path in paths.items() if path.suffix == ".py"}
    assert import_cycles(import_graph(paths)) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    """The check itself: a module-level import one way, a function-level one back."""
    (tmp_path / "a.py").write_text("from .b import B\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import A\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    paths = {f"pkg.{n}": tmp_path / f"{n}.py" for n in "abc"}
    assert import_cycles(import_graph(paths)) == [["pkg.a", "pkg.b", "pkg.a"]]
