"""The package's shape: every module imports on its own, the public surface is declared."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

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
