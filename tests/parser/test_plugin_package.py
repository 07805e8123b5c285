"""A third-party parser package, pip-installed, is found through its entry point.

``plugin_pkg/`` is a tiny plugin distribution (parser ``celsius``). It is installed with
pip into a temporary directory, which is then put on the ``PYTHONPATH`` of subprocesses:
the entry point is discovered the way it would be in a deployed parser, without touching
the test interpreter's own site-packages. ``--no-deps --no-build-isolation --no-index``
keep it offline; the package's in-tree build backend needs nothing but the standard library.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent / "plugin_pkg"
SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = SRC.parent


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
            str(PACKAGE),
        ],
        check=True, capture_output=True, text=True, timeout=120,
    )
    assert (target / "sluice_celsius" / "__init__.py").exists()
    return os.pathsep.join([str(target), str(SRC), str(ROOT)])


def run_python(pythonpath: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, *args, *(["-c", textwrap.dedent(code)] if code else [])],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_installed_plugin_is_used_in_a_chain(plugin_path: str) -> None:
    result = run_python(
        plugin_path,
        """
        import json
        from sluice.parser import registry
        chain = registry.build_chain(["measurement", "celsius"], {"celsius.digits": "1"})
        doc = chain.parse({"id": "r1", "sensor": "oven", "metric": "temp",
                           "value": 212, "unit": "F", "ts": 1000})
        print(json.dumps({"known": registry.known_names(), "names": chain.names, "doc": doc}))
        """,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["known"] == ["celsius", "measurement", "uppercase"]
    assert out["names"] == ["measurement", "celsius"]
    assert (out["doc"]["value"], out["doc"]["unit"], out["doc"]["parser"]) == (100.0, "C", "measurement")


def test_unknown_name_fails_listing_the_plugin_too(plugin_path: str) -> None:
    result = run_python(
        plugin_path,
        """
        from sluice.errors import ConfigError
        from sluice.parser import registry
        try:
            registry.build_chain(["measurement", "fahrenheit"])
        except ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("no ConfigError")
        """,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "unknown parser 'fahrenheit'; known parsers: celsius, measurement, uppercase"
    )


def test_installed_plugin_passes_the_compliance_suite(plugin_path: str) -> None:
    result = run_python(
        plugin_path, "", "-m", "pytest", "-v", "-p", "no:cacheprovider",
        "tests/parser/test_compliance.py", "-k", "celsius",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_accepts_its_example[celsius] PASSED" in result.stdout
    assert "test_arbitrary_values_give_a_dict_or_a_record_error[celsius] PASSED" in result.stdout


def test_docs_show_this_plugin_verbatim() -> None:
    docs = (ROOT / "docs" / "parsers.md").read_text(encoding="utf-8")
    source = (PACKAGE / "sluice_celsius" / "__init__.py").read_text(encoding="utf-8")
    assert f"```python\n{source}```" in docs
    project = (PACKAGE / "pyproject.toml").read_text(encoding="utf-8")
    entry_point = '[project.entry-points."sluice.parsers"]\ncelsius = "sluice_celsius:CelsiusParser"'
    assert entry_point in project
    assert entry_point in docs
