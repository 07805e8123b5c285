"""scripts/images.sh: how run_pipeline.sh tells "no registry" from other pull failures, and
the block of .env that lets a plain ``docker-compose up`` find the locally built images."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "scripts" / "images.sh"

# Errors as `docker pull` prints them: the first one is this machine's, verbatim.
UNREACHABLE = [
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
    "registry-1.docker.io on 10.255.255.53:53: no such host",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
    "registry-1.docker.io: Temporary failure in name resolution",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": net/http: request '
    "canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp '
    "54.1.2.3:443: i/o timeout",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": net/http: TLS '
    "handshake timeout",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp '
    "54.1.2.3:443: connect: network is unreachable",
]
OTHER = [
    "Error response from daemon: pull access denied for sluice-nope, repository does not "
    "exist or may require 'docker login': denied: requested access to the resource is denied",
    "Error response from daemon: manifest for rabbitmq:0.0.0-nope not found: manifest unknown: "
    "manifest unknown",
    "invalid reference format: repository name must be lowercase",
]


def bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prelude = (
        'say() { printf "%s\\n" "$*"; }\n'
        'die() { printf "run_pipeline: %s\\n" "$*" >&2; exit 1; }\n'
        f"source {LIB}\n"
    )
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + prelude + script],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("message", UNREACHABLE)
def test_registry_unreachable_errors_are_recognised(message: str, tmp_path: Path) -> None:
    """Name resolution, connection and TLS failures mean: build the images locally."""
    result = bash('pull_error_is_unreachable "$MSG"', tmp_path, {"MSG": message})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("message", OTHER)
def test_other_pull_errors_are_not_mistaken_for_no_registry(message: str, tmp_path: Path) -> None:
    """A wrong name or denied access must be reported, not papered over by a local build."""
    result = bash('pull_error_is_unreachable "$MSG"', tmp_path, {"MSG": message})
    assert result.returncode == 1, result.stderr


def test_env_block_keeps_the_rest_of_env(tmp_path: Path) -> None:
    """Writing twice replaces the block; removing it leaves the other lines untouched."""
    env = tmp_path / ".env"
    env.write_text("RABBITMQ_PASSWORD=s3cret\n# a comment\n")
    (tmp_path / "one").write_text("# header\nSLUICE_IMAGE=sluice:one\nNGINX_IMAGE=n:1\n")
    (tmp_path / "two").write_text("SLUICE_IMAGE=sluice:two\n")

    assert bash("env_block_write .env one && env_block_write .env two", tmp_path).returncode == 0
    lines = env.read_text().splitlines()
    assert lines[:2] == ["RABBITMQ_PASSWORD=s3cret", "# a comment"]
    assert "SLUICE_IMAGE=sluice:two" in lines
    assert "SLUICE_IMAGE=sluice:one" not in lines and "NGINX_IMAGE=n:1" not in lines
    assert "# header" not in lines
    assert len(lines) == 5  # two own lines, the markers, one variable

    assert bash("env_block_remove .env", tmp_path).returncode == 0
    assert env.read_text() == "RABBITMQ_PASSWORD=s3cret\n# a comment\n"
    assert bash("env_block_remove .env", tmp_path).returncode == 1  # nothing left to remove


def project_copy(tmp_path: Path) -> Path:
    """The files ensure_images reads, in a directory of their own (it writes .env there)."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True)
    for name in ("docker-compose.yml", "run_pipeline.sh"):
        shutil.copy2(ROOT / name, work / name)
    for name in ("images.sh", "build-offline-images.sh", "lib.sh"):
        shutil.copy2(ROOT / "scripts" / name, work / "scripts" / name)
    return work


#: What ``./run_pipeline.sh up`` puts in .env before it looks for images: compose refuses
#: to read docker-compose.yml without these.
PASSWORDS = {name: "not-a-secret" for name in (
    "SLUICE_SERVER_AMQP_PASSWORD", "SLUICE_PARSER_AMQP_PASSWORD", "SLUICE_API_AMQP_PASSWORD",
)}

ENSURE = """
COMPOSE=(docker-compose)
compose() { "${COMPOSE[@]}" "$@"; }
load_offline_env() { :; }
ensure_images
"""


@pytest.mark.docker
def test_a_wrong_image_name_stops_with_the_pull_error(tmp_path: Path) -> None:
    """Not a registry outage: no local build starts, the error names the image."""
    work = project_copy(tmp_path)
    result = bash(ENSURE, work, {"RABBITMQ_IMAGE": "Bad_Name:UPPER", "COMPOSE_PROJECT_NAME": "imgtest", **PASSWORDS})
    assert result.returncode == 1
    assert "cannot pull Bad_Name:UPPER" in result.stderr
    assert "Building the images locally" not in result.stdout


@pytest.mark.docker
def test_sluice_offline_0_insists_on_the_registry(tmp_path: Path) -> None:
    """A host under .invalid never resolves: with SLUICE_OFFLINE=0 that is an error."""
    work = project_copy(tmp_path)
    (work / ".env").write_text("KEEP=1\n")
    assert bash("env_block_write .env /dev/stdin <<<'NGINX_IMAGE=x:1'", work).returncode == 0
    result = bash(ENSURE, work, {
        "RABBITMQ_IMAGE": "registry.sluice.invalid/rabbitmq:1", "SLUICE_OFFLINE": "0",
        "COMPOSE_PROJECT_NAME": "imgtest", **PASSWORDS,
    })
    assert result.returncode == 1
    assert "SLUICE_OFFLINE=0 insists on the registry" in result.stderr
    assert "no such host" in result.stderr
    # The offline names are gone from .env, so compose would not use them either.
    assert (work / ".env").read_text() == "KEEP=1\n"


@pytest.mark.docker
def test_no_registry_starts_the_offline_build(tmp_path: Path) -> None:
    """An unresolvable registry leads to scripts/build-offline-images.sh and a .env block.

    The build is limited to the base image (which must exist already, like every docker
    test here needs), so the test does not rebuild the whole set."""
    base = "sluice-offline/python:3.11-bookworm"
    assert subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode == 0, (
        f"{base} is missing: build it with scripts/build-offline-images.sh"
    )
    work = project_copy(tmp_path)
    (work / "tests" / "support").mkdir(parents=True)
    result = bash(ENSURE, work, {
        "RABBITMQ_IMAGE": "registry.sluice.invalid/rabbitmq:1", "SLUICE_OFFLINE_ONLY": "base",
        "COMPOSE_PROJECT_NAME": "imgtest", **PASSWORDS,
    })
    assert "No container registry is reachable" in result.stdout, result.stdout + result.stderr
    assert "Building the images locally with scripts/build-offline-images.sh" in result.stdout
    assert "Built the offline images in" in result.stdout
    # The one unpullable image was not among those built: that is reported, not ignored.
    assert result.returncode == 1
    assert "still missing after the offline build: registry.sluice.invalid/rabbitmq:1" in result.stderr
    env = (work / ".env").read_text()
    assert f"SLUICE_PYTHON_IMAGE={base}" in env
    assert (work / ".offline-images.env").exists()


@pytest.mark.docker
def test_a_compose_file_compose_cannot_read_is_an_error(tmp_path: Path) -> None:
    """Without the passwords .env holds, compose cannot render the file: that is reported,
    never mistaken for "every image is here"."""
    work = project_copy(tmp_path)
    env = {name: "" for name in PASSWORDS}
    result = bash(ENSURE, work, {"COMPOSE_PROJECT_NAME": "imgtest", **env})
    assert result.returncode == 1
    assert "could not list the images" in result.stderr
    assert "run ./run_pipeline.sh up once" in result.stderr
