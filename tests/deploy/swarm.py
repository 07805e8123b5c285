"""Driving the swarm stack (deploy/swarm/stack.yml) through ``run_pipeline.sh stack``, and
looking inside it: tasks, the RabbitMQ cluster, Elasticsearch, a streaming client.

The Docker engine is shared by everyone on the machine and a swarm is machine-wide, so:
every use holds the swarm lock of ``tests/support/locks.py`` exclusively (``/var/lock/sluice-swarm.lock``,
the same lock as the shell's ``flock``; compose deployments hold it shared, since a swarm's
init and leave rework the engine's networks under them), initialises a swarm only when
the engine has none and then leaves it at the end, never leaves a swarm it found, and
names its stack uniquely.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any, Callable, Optional, TypeVar

from tests.support.rabbitmq import free_port

from .pipeline import ROOT, RUN, wait_for

T = TypeVar("T")
RABBITMQ_NODES = ("rabbitmq1", "rabbitmq2", "rabbitmq3")
RAW_QUEUE = "sluice.raw.measurement"


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout



@contextlib.contextmanager
def single_node_swarm() -> Iterator[bool]:
    """A swarm on this engine: made (and left at the end) if there was none; yields whether
    this run made it."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    made = state == "inactive"
    if made:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    elif state != "active":
        raise AssertionError(f"the engine's swarm is in state {state!r}; expected inactive or active")
    try:
        yield made
    finally:
        if made:
            docker("swarm", "leave", "--force", check=False, timeout=120)


class Stack:
    """One run-unique stack, driven with ``run_pipeline.sh stack``."""

    def __init__(self) -> None:
        self.name = f"sluicet{uuid.uuid4().hex[:8]}"
        self.last_error = ""
        self.last_count: Optional[int] = None
        self.ingest_port = free_port()
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            SLUICE_STACK=self.name,
            SLUICE_INGEST_PORT=str(self.ingest_port),
            SLUICE_HTTP_PORT=str(self.http_port),
            SLUICE_WAIT_TIMEOUT="300",
            ES_HEAP="512m",
        )

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        proc = subprocess.run(
            [RUN, "stack", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"run_pipeline.sh stack {' '.join(args)} exited {proc.returncode}:\n{output[-6000:]}")
        return output

    def service(self, name: str) -> str:
        return f"{self.name}_{name}"

    def logs(self, service: str) -> str:
        """Every task's output (services log to stderr, which ``docker service logs``
        passes on as its own stderr)."""
        proc = subprocess.run(
            ["docker", "service", "logs", "--raw", self.service(service)],
            capture_output=True, text=True, timeout=60,
        )
        return proc.stdout + proc.stderr

    def containers(self, service: str) -> list[str]:
        out = docker("ps", "-q", "--no-trunc", "--filter",
                     f"label=com.docker.swarm.service.name={self.service(service)}")
        return out.split()

    def container(self, service: str) -> str:
        found: list[str] = wait_for(lambda: self.containers(service), 120, f"a running {service} task")
        return found[0]

    def exec(self, service: str, *args: str, timeout: float = 60) -> str:
        return docker("exec", self.container(service), *args, timeout=timeout)

    def running_tasks(self, service: str) -> int:
        out = docker("service", "ps", "-q", "--filter", "desired-state=running", self.service(service))
        states = [
            docker("inspect", "-f", "{{.Status.State}}", task).strip() for task in out.split()
        ]
        return sum(state == "running" for state in states)

    # -- RabbitMQ -----------------------------------------------------------------------
    def rabbitmqctl_json(self, *args: str, node: str = "rabbitmq1") -> Any:
        for candidate in (node, *RABBITMQ_NODES):
            ids = self.containers(candidate)
            if not ids:
                continue
            proc = subprocess.run(
                ["docker", "exec", ids[0], "rabbitmqctl", "-q", *args, "--formatter", "json"],
                capture_output=True, text=True, timeout=60,
            )
            if proc.returncode == 0:
                return json.loads(proc.stdout)
        raise AssertionError(f"no RabbitMQ node answered rabbitmqctl {' '.join(args)}")

    def running_nodes(self) -> list[str]:
        try:
            nodes: list[str] = self.rabbitmqctl_json("cluster_status")["running_nodes"]
        except AssertionError:
            return []
        return nodes

    def queues(self) -> dict[str, dict[str, Any]]:
        rows = self.rabbitmqctl_json("list_queues", "name", "consumers", "messages", "leader", "members")
        return {row["name"]: row for row in rows}

    # -- Elasticsearch, through a parser task (the stand-in publishes no port) -----------
    def es(self, path: str, body: Optional[dict[str, Any]] = None) -> Any:
        script = (
            "import json, sys, urllib.request\n"
            "body = sys.argv[2].encode() if len(sys.argv) > 2 else None\n"
            "req = urllib.request.Request('http://elasticsearch:9200' + sys.argv[1], data=body, "
            "headers={'Content-Type': 'application/json'}, method='POST' if body else 'GET')\n"
            "print(urllib.request.urlopen(req, timeout=60).read().decode())\n"
        )
        args = ["python", "-c", script, path] + ([json.dumps(body)] if body is not None else [])
        return json.loads(self.exec("parser", *args, timeout=90))

    def count(self) -> int:
        """Documents of kind measurement (a light query, for polling)."""
        self.es("/sluice-measurement-*/_refresh", {})
        self.last_count = int(self.es("/sluice-measurement-*/_count")["count"])
        return self.last_count

    def attempt(self, query: Callable[[], T]) -> Optional[T]:
        """``query()``, or None when the store did not answer this time (the stand-in can
        time out while it indexes a backlog on a busy machine); the error is kept in
        :attr:`last_error`. For polling loops."""
        try:
            return query()
        except (AssertionError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            self.last_error = repr(exc)[-500:]
            return None

    def stored(self) -> tuple[int, float]:
        """Documents of kind measurement and the exact sum of their values."""
        self.es("/sluice-measurement-*/_refresh", {})
        answer = self.es("/sluice-measurement-*/_search", {
            "size": 0, "track_total_hits": True, "aggs": {"total": {"sum": {"field": "value"}}},
        })
        return int(answer["hits"]["total"]["value"]), float(answer["aggregations"]["total"]["value"])


class StreamingClient:
    """``sluice client --file -`` on the host, through nginx's published port, fed numbered
    records (value = number, 1, 2, 3, ...) at a steady rate until :meth:`finish`."""

    def __init__(self, port: int, run_id: str, rate: float) -> None:
        self.rate = rate
        self.written = 0
        self._stop = threading.Event()
        self._run_id = run_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sluice", "client", "--target", f"127.0.0.1:{port}",
             "--file", "-", "--json", "--connections", "4", "--batch-size", "100",
             "--linger-ms", "50", "--log-level", "warning"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )
        self._feeder = threading.Thread(target=self._feed, name="feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            lines = []
            while self.written < due:
                self.written += 1
                n = self.written
                lines.append(json.dumps({
                    "id": f"{self._run_id}-{n}", "sensor": f"sensor-{n % 20}",
                    "metric": "temperature", "value": n, "ts": int(time.time() * 1000),
                }))
            if lines:
                stdin.write(("\n".join(lines) + "\n").encode())
                stdin.flush()
            time.sleep(0.05)
        # communicate() in finish() closes stdin: that end of input lets the client finish.

    def finish(self, timeout: float = 300) -> dict[str, Any]:
        """Stop feeding; the client sends the rest, waits for every ack and reports."""
        self._stop.set()
        self._feeder.join(30)
        out, err = self.proc.communicate(timeout=timeout)
        summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        summary["exit_status"] = self.proc.returncode
        summary["stderr_tail"] = err.decode()[-2000:]
        return summary

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
