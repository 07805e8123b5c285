"""A minimal PEP 517 build backend: a pure-Python wheel from pyproject.toml's [project].

Only what the plugin test needs: one top-level package named after the project, its
entry points, no sdist, no editable installs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from typing import Any

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        from pip._vendor import tomli as tomllib

HERE = os.path.dirname(os.path.abspath(__file__))


def _project() -> dict[str, Any]:
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _files(project: dict[str, Any], dist_info: str) -> dict[str, bytes]:
    package = project["name"].replace("-", "_")
    files: dict[str, bytes] = {}
    for root, _dirs, names in os.walk(os.path.join(HERE, package)):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    files[os.path.relpath(path, HERE).replace(os.sep, "/")] = f.read()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: wheel_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    lines = []
    for group, points in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in points.items()]
    files[f"{dist_info}/entry_points.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    project = _project()
    stem = f"{project['name'].replace('-', '_')}-{project['version']}"
    dist_info = f"{stem}.dist-info"
    files = _files(project, dist_info)
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_name = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel_name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return wheel_name
