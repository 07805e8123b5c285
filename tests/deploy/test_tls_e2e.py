"""End to end in Docker with TLS and authentication on every hop: ``run_pipeline.sh up --tls``
in a compose project, env file and secrets directory of this run's own.

What it checks, each against something known independently of the pipeline's own report:
  1. records flow exactly once: the load generator's counted records (it stops after
     ``COUNT``) are all acked and the API, over HTTPS with a bearer token, counts exactly
     that many documents, and no more after a pause;
  2. a plain-text client is refused at the ingest port (no welcome), and a TLS client
     without a token gets ``auth_failed``; one with the operator's token streams;
  3. the API answers 401 without a token, redirects plain HTTP to HTTPS, keeps /healthz open;
  4. every AMQP connection RabbitMQ reports (``rabbitmqctl list_connections``) is TLS, one
     user per role, no guest; Elasticsearch (the stand-in's proxy, or the real image)
     refuses plain HTTP and unauthenticated HTTPS.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from sluice.protocol import encode
from tests.support.locks import engine_shared
from tests.support.rabbitmq import free_port

from .pipeline import (
    INSTALL_HINT,
    ROOT,
    RUN,
    client_summaries,
    docker_problem,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

COUNT = 3000


@dataclass
class TlsStack:
    env: dict[str, str]
    secrets: Path
    #: records other tests of this module streamed and saw acked, besides the generator's
    #: counted run (tests run in random order, so the total must account for them)
    extra_acked: int = 0

    @property
    def project(self) -> str:
        return self.env["COMPOSE_PROJECT_NAME"]

    def port(self, name: str) -> int:
        return int(self.env[name])

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        proc = subprocess.run([RUN, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        output = proc.stdout + proc.stderr
        if check and proc.returncode != 0:
            raise AssertionError(f"run_pipeline.sh {' '.join(args)} exited {proc.returncode}:\n{output[-6000:]}")
        return output

    def container(self, service: str) -> str:
        out = subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}",
             "--filter", "label=com.docker.compose.oneoff=False"],
            capture_output=True, text=True, check=True).stdout.split()
        assert out, f"no {service} container in {self.project}"
        return out[0]

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.secrets / "tls" / "ca.pem"))

    def https(self, path: str, token: Optional[str] = None, port_name: str = "SLUICE_HTTP_PORT"
              ) -> tuple[int, str]:
        request = urllib.request.Request(f"https://localhost:{self.port(port_name)}{path}")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.tls()) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    def reader_token(self) -> str:
        return (self.secrets / "api-reader.token").read_text().strip()

    def api_count(self, strict: bool = True) -> Optional[int]:
        """Documents the API counts; a 503 (the store busy: try again) is None unless strict."""
        status, body = self.https("/api/v1/stats", self.reader_token())
        if status == 503 and not strict:
            return None
        assert status == 200, body
        count: int = json.loads(body)["count"]
        return count



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    problem = docker_problem()
    if problem:
        pytest.fail(f"{problem}; {INSTALL_HINT}", pytrace=False)
    base = tmp_path_factory.mktemp("tls-stack")
    env = dict(os.environ)
    env.update(
        COMPOSE_PROJECT_NAME=f"sluicetls{uuid.uuid4().hex[:8]}",
        SLUICE_ENV_FILE=str(base / "env"),
        SLUICE_SECRETS_DIR=str(base / "secrets"),
        SLUICE_INGEST_PORT=str(free_port()),
        SLUICE_HTTP_PORT=str(free_port()),
        SLUICE_RABBITMQ_UI_PORT=str(free_port()),
        SLUICE_ES_PORT=str(free_port()),
        SLUICE_CLIENT_COUNT=str(COUNT),
        SLUICE_CLIENT_RATE="1000",
        SLUICE_CLIENT_CONNECTIONS="2",
        SLUICE_CLIENT_RESTART="no",
        SLUICE_WAIT_TIMEOUT="240",
        ES_HEAP="512m",
    )
    stack = TlsStack(env, base / "secrets")
    with engine_shared():
        try:
            stack.run("up", "--tls", timeout=420)
            yield stack
        finally:
            stack.run("down", "--volumes", check=False, timeout=300)


def test_records_flow_exactly_once_over_tls(stack: TlsStack) -> None:
    client = stack.container("client")
    wait_for(lambda: subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", client],
                                    capture_output=True, text=True).stdout.strip() == "exited",
             240, "the load generator to finish its counted run")
    logs = subprocess.run(["docker", "logs", client], capture_output=True, text=True)
    summaries = client_summaries(logs.stdout + logs.stderr)
    assert len(summaries) == 1, logs.stdout[-2000:] + logs.stderr[-2000:]
    assert summaries[0]["produced"] == COUNT and summaries[0]["acked"] == COUNT, summaries
    wait_for(lambda: (stack.api_count(strict=False) or 0) >= COUNT + stack.extra_acked, 180,
             f"{COUNT} + {stack.extra_acked} documents in the API's count")
    time.sleep(3)  # a surplus (a duplicate) would show by now
    assert stack.api_count() == COUNT + stack.extra_acked


def test_ingest_refuses_plain_text_and_missing_tokens(stack: TlsStack) -> None:
    port = stack.port("SLUICE_INGEST_PORT")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:
        plain.sendall(encode({"type": "hello", "version": 1, "client_id": "plain"}))
        plain.settimeout(30)
        received = b""
        while True:
            chunk = plain.recv(4096)
            if not chunk:
                break
            received += chunk
        assert b"welcome" not in received, received
    base = ["client", "--target", f"localhost:{port}", "--json", "--count", "50",
            "--ca-file", str(stack.secrets / "tls" / "ca.pem"), "--log-level", "error"]
    env = {**os.environ, "PYTHONPATH": str(Path(ROOT) / "src")}
    env.pop("SLUICE_TOKEN_FILE", None)
    command = [sys.executable, "-m", "sluice", *base]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "auth_failed" in json.loads(refused.stdout)["fatal_error"]
    env["SLUICE_TOKEN_FILE"] = str(stack.secrets / "operator.token")
    accepted = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert json.loads(accepted.stdout)["acked"] == 50
    stack.extra_acked += 50


def test_api_needs_a_token_and_https(stack: TlsStack) -> None:
    status, body = stack.https("/api/v1/stats")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert stack.https("/metrics")[0] == 401
    assert stack.https("/healthz")[0] == 200
    status, body = stack.https("/api/v1/pipeline", stack.reader_token())
    assert status == 200, body
    port = stack.port("SLUICE_HTTP_PORT")
    request = urllib.request.Request(f"http://localhost:{port}/api/v1/stats")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(NoRedirect).open(request, timeout=30)
    with redirect.value as response:
        assert response.code == 301
        assert response.headers["Location"] == f"https://localhost:{port}/api/v1/stats"


def test_broker_and_store_connections_are_tls(stack: TlsStack) -> None:
    # The API opens its RabbitMQ connection on its first pipeline request.
    assert stack.https("/api/v1/pipeline", stack.reader_token())[0] == 200
    rabbitmq = stack.container("rabbitmq")

    def connections() -> list[list[str]]:
        out = subprocess.run(["docker", "exec", rabbitmq, "rabbitmqctl", "-q", "list_connections",
                              "user", "ssl", "ssl_protocol"], capture_output=True, text=True, timeout=60)
        rows = [line.split("\t") for line in out.stdout.splitlines() if line.strip()]
        return [r for r in rows if r and r[0] != "user"]

    rows = wait_for(lambda: (lambda r: r if {x[0] for x in r} >= {"sluice-server", "sluice-parser", "sluice-api"}
                             else None)(connections()), 60, "server, parser and api connections")
    assert all(r[1] == "true" and r[2].startswith("tlsv1.") for r in rows), rows
    users = subprocess.run(["docker", "exec", rabbitmq, "rabbitmqctl", "-q", "list_users"],
                           capture_output=True, text=True, timeout=60).stdout
    assert "guest" not in users
    es_port = stack.port("SLUICE_ES_PORT")
    plain = http.client.HTTPConnection("localhost", es_port, timeout=15)
    try:
        plain.request("GET", "/")
        with pytest.raises((http.client.HTTPException, OSError)):
            plain.getresponse()
    finally:
        plain.close()
    assert stack.https("/", port_name="SLUICE_ES_PORT")[0] == 401
