"""Driving the pipeline in Docker through ``run_pipeline.sh``, as a user would, and looking
inside it (metrics, logs, Elasticsearch).

Needs a Docker engine and the images. On machines without a registry,
``scripts/ci-docker.sh`` installs and starts the engine and builds every image locally
(``scripts/build-offline-images.sh``, which writes ``.offline-images.env``). A missing engine
or missing images fail the test with instructions; they never skip it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable, Optional

from tests.support.locks import engine_shared
from tests.support.metrics import parse_metrics
from tests.support.names import unique_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "run_pipeline.sh")
#: This run's compose project: two runs on one Docker engine never share containers,
#: networks or volumes.
PROJECT = unique_name("sluicee2e")

INSTALL_HINT = (
    "the docker end-to-end test needs a running Docker engine with compose: "
    "`apt-get install docker.io docker-compose debootstrap`, start the daemon "
    "(`dockerd >/var/log/dockerd.log 2>&1 &`), and build the images "
    "(`scripts/ci-docker.sh` does all of this on a machine without a registry)"
)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """``predicate()``'s first truthy value, polled every ``interval`` seconds; past
    ``timeout`` the test fails naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def docker_problem() -> Optional[str]:
    if shutil.which("docker") is None:
        return "docker is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"the Docker daemon is not reachable: {probe.stderr.strip()[-300:]}"
    has_compose = shutil.which("docker-compose") is not None or (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )
    if not has_compose:
        return "neither `docker compose` nor `docker-compose` is installed"
    if os.environ.get("SLUICE_OFFLINE") != "0" and not os.path.exists(
        os.path.join(ROOT, ".offline-images.env")
    ):
        return (
            ".offline-images.env is missing: build the images with "
            "scripts/build-offline-images.sh (or set SLUICE_OFFLINE=0 to pull public images)"
        )
    return None


class Pipeline:
    """One compose project of the pipeline on free host ports, and ways to look inside it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.project = env.get("COMPOSE_PROJECT_NAME", PROJECT)
        self.http_port = int(env["SLUICE_HTTP_PORT"])
        self.es_port = int(env["SLUICE_ES_PORT"])
        self.ingest_port = int(env["SLUICE_INGEST_PORT"])
        self.project = env.get("COMPOSE_PROJECT_NAME", PROJECT)

    # -- commands -------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """``run_pipeline.sh ARGS``; its output (stdout and stderr) is returned."""
        proc = subprocess.run(
            [RUN, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(
                f"run_pipeline.sh {' '.join(args)} exited {proc.returncode}:\n{output[-6000:]}"
            )
        return output

    def compose(self, *args: str, timeout: float = 300) -> str:
        """The compose command run_pipeline.sh uses, with the same environment."""
        command = self.env.get("SLUICE_COMPOSE", "").split() or _compose_command()
        proc = subprocess.run(
            [*command, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{command} {args} exited {proc.returncode}:\n{proc.stderr}")
        return proc.stdout

    def containers(self, service: str, *, running: bool = True, one_off: bool = False) -> list[str]:
        args = [
            "docker", "ps", "-q", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--filter", f"label=com.docker.compose.oneoff={'True' if one_off else 'False'}",
        ]
        if not running:
            args.insert(2, "-a")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        return out.split()

    def inspect(self, container: str) -> dict[str, Any]:
        out = subprocess.run(
            ["docker", "inspect", container], capture_output=True, text=True, check=True
        ).stdout
        info: dict[str, Any] = json.loads(out)[0]
        return info

    def metrics(self, container: str, port: int = 8080) -> dict[str, float]:
        """A container's /metrics, each series summed over its labels."""
        script = (
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
        )
        out = subprocess.run(
            ["docker", "exec", container, "python", "-c", script],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return parse_metrics(out)

    def start_clients(self, n: int, *, count: int, rate: int, connections: int) -> list[str]:
        """n one-off client containers, detached; returns their names."""
        names = []
        for _ in range(n):
            out = self.compose(
                "run", "-d", "--no-deps", "client", "client", "--target=nginx:7000", "--json",
                f"--count={count}", f"--rate={rate}", f"--connections={connections}",
            )
            names.append(out.strip().splitlines()[-1].strip())
        return names

    def wait_exit(self, containers: list[str], timeout: float = 300) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        for c in containers:
            remaining = max(1.0, deadline - time.monotonic())
            out = subprocess.run(
                ["docker", "wait", c], capture_output=True, text=True, timeout=remaining,
                check=True,
            ).stdout
            codes[c] = int(out.strip())
        return codes

    def diagnostics(self, tail: int = 80) -> str:
        """What an engineer reads first when a run fails: every container's state and the
        last lines of every service's log."""
        parts = []
        for args in (("ps", "-a"), ("logs", "--no-color", "--timestamps", f"--tail={tail}")):
            proc = subprocess.run([*_compose_command(), *args], cwd=ROOT, env=self.env,
                                  capture_output=True, text=True, timeout=120)
            parts.append(f"$ compose {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def deployed(self, request: Any) -> Iterator[Pipeline]:
        """A module fixture's whole deployment: it holds the engine shared (no swarm is made
        or left meanwhile), reports the containers if a test of the module failed, and
        always takes the project down."""
        failed_before = request.session.testsfailed
        with engine_shared():
            try:
                yield self
            finally:
                if request.session.testsfailed > failed_before:
                    self.report_failure(request.config)
                self.run("down", "--volumes", check=False)

    def report_failure(self, config: Any) -> None:
        """Print the diagnostics past pytest's capture (a module fixture's teardown output
        is otherwise never shown) and keep them in test-artifacts/."""
        text = self.diagnostics()
        os.makedirs(os.path.join(ROOT, "test-artifacts"), exist_ok=True)
        path = os.path.join(ROOT, "test-artifacts", f"{self.project}-diagnostics.txt")
        with open(path, "w") as out:
            out.write(text)
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n---- {self.project}: containers and logs (also in {path}) ----\n{text}")

    def logs(self, container: str) -> str:
        proc = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
        return proc.stdout + proc.stderr

    # -- HTTP -------------------------------------------------------------------------------
    def http(self, port: int, path: str, method: str = "GET") -> tuple[int, str, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()

    def es_count(self) -> int:
        pattern = "sluice-measurement-*"
        self.http(self.es_port, f"/{pattern}/_refresh", method="POST")
        status, _, body = self.http(self.es_port, f"/{pattern}/_count")
        assert status == 200, body
        count: int = json.loads(body)["count"]
        return count


def _compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def client_summaries(log_text: str) -> list[dict[str, Any]]:
    """The JSON summaries clients print at exit, from `logs` output (prefixed or not)."""
    found = []
    for line in log_text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict) and "acked" in doc and "produced" in doc:
            found.append(doc)
    return found
