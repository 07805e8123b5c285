"""The ``sluice`` command line: one subcommand per service, each importing only its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sluice.cli import COMMANDS

# What a service's dependencies cost to import, checked in a fresh interpreter.
_IMPORTED_BY = """
import sys
from sluice.cli import build_parser
build_parser(sys.argv[1]).parse_args(sys.argv[1:])
print(" ".join(sorted(m for m in ("elasticsearch", "aiormq", "aiohttp", "sluice.server.app")
                      if m in sys.modules)))
"""


def imported_by(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _IMPORTED_BY, *argv], check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def test_a_client_loads_neither_the_store_client_nor_the_server() -> None:
    assert imported_by("client", "--count", "1") & {"elasticsearch", "sluice.server.app"} == set()


def test_the_command_line_imports_only_the_command_it_runs() -> None:
    """Through ``main``: ``sluice client --no-such-flag`` fails in argparse, after the
    parser was built; what it imported by then is printed by an exit hook."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('elasticsearch' in sys.modules, file=sys.stderr))\n"
            "from sluice.cli import main\n"
            "sys.exit(main(['client', '--no-such-flag']))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2 and "--no-such-flag" in run.stderr
    assert run.stderr.rstrip().endswith("False")


def test_a_parser_loads_what_it_needs() -> None:
    assert {"elasticsearch", "aiormq"} <= imported_by("parser")


@pytest.mark.parametrize("argv", [["--help"], ["-h", "client"], ["--help", "parser"]])
def test_the_top_level_help_lists_every_command_with_its_description(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "sluice", *argv], check=True,
                         capture_output=True, text=True).stdout
    listed = out.split("positional arguments:")[1].split("options:")[0]
    for name in COMMANDS:
        assert f"\n    {name}" in listed
    assert "Accept client connections" in listed  # the server's description


def test_a_mistyped_command_is_refused_with_the_names_there_are() -> None:
    run = subprocess.run([sys.executable, "-m", "sluice", "clent", "--count", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "invalid choice: 'clent'" in run.stderr and "'client'" in run.stderr
