"""nginx as a TCP (stream) load balancer in front of sluice servers, for tests.

The fixture ``nginx_stream`` returns a function that starts Debian's nginx
(``/usr/sbin/nginx`` with the stream module from ``libnginx-mod-stream``) on a free port,
balancing over the given upstream addresses, with its config, pid file and logs in a
temporary prefix directory. Every nginx it started is stopped at teardown. A missing nginx
fails the test with what to install: it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import pytest

from .rabbitmq import free_port

NGINX = "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

CONFIG = """\
load_module {module};
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
stream {{
    upstream sluice_servers {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_pass sluice_servers;
        proxy_connect_timeout 2s;
        # ingest connections are long-lived; the servers' own idle timeout governs them
        proxy_timeout 1h;
    }}
}}
"""


@dataclass
class Balancer:
    port: int
    prefix: str
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def error_log(self) -> str:
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open connections
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


StartBalancer = Callable[[Sequence[str]], Balancer]


def _require_nginx() -> None:
    if not os.access(NGINX, os.X_OK) or not os.path.exists(STREAM_MODULE):
        pytest.fail(
            f"this test needs nginx with the stream module ({NGINX}, {STREAM_MODULE}): "
            "apt-get install nginx-light libnginx-mod-stream (./scripts/test.sh installs them)",
            pytrace=False,
        )


def _wait_listening(balancer: Balancer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if balancer.process.poll() is not None:
            pytest.fail(f"nginx exited with {balancer.process.returncode}:\n{balancer.error_log()}",
                        pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", balancer.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not listen on {balancer.port}:\n{balancer.error_log()}",
                            pytrace=False)
            time.sleep(0.05)


@pytest.fixture
def nginx_stream() -> Iterator[StartBalancer]:
    """``start(["127.0.0.1:7001", "127.0.0.1:7002"]) -> Balancer`` (round robin)."""
    _require_nginx()
    started: list[Balancer] = []

    def start(upstreams: Sequence[str]) -> Balancer:
        prefix = tempfile.mkdtemp(prefix="sluice-nginx-")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)  # nginx opens it before the config
        port = free_port()
        servers = "\n".join(f"        server {address};" for address in upstreams)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONFIG.format(module=STREAM_MODULE, prefix=prefix, servers=servers, port=port))
        process = subprocess.Popen(
            [NGINX, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        balancer = Balancer(port=port, prefix=prefix, process=process)
        started.append(balancer)
        _wait_listening(balancer)
        return balancer

    try:
        yield start
    finally:
        for balancer in started:
            balancer.stop()
            shutil.rmtree(balancer.prefix, ignore_errors=True)
