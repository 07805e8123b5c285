"""RabbitMQ for tests: the shared broker, per-test namespaces, and a private node that a
test may stop and start without disturbing anyone else.

The shared broker is ``SLUICE_AMQP_URL`` or the local default; ``scripts/test.sh`` starts
it. A missing broker fails the tests with instructions: it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import aiormq
import pytest
from aiormq.abc import AbstractConnection, DeliveredMessage
from pamqp.commands import Basic

from sluice.amqp import BrokerLink
from sluice.topology import Topology

from .names import unique_name

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
TEST_KINDS = ("measurement", "other")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _reachable(url: str) -> str | None:
    async def probe() -> None:
        conn = await asyncio.wait_for(aiormq.connect(url), 10)
        await conn.close()

    # A private loop, not asyncio.run: asyncio.run ends with set_event_loop(None), which on
    # Python 3.9 orphans the loop pytest-asyncio set up, and its unclosed self-pipe socket
    # then fails some later test with a ResourceWarning.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(probe())
    except Exception as exc:
        return repr(exc)
    finally:
        loop.close()
    return None


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("SLUICE_AMQP_URL", DEFAULT_URL)
    problem = _reachable(url)
    if problem is not None:
        pytest.fail(
            f"RabbitMQ is not reachable at {url} ({problem}). Run the tests with ./scripts/test.sh, "
            "which starts a local broker (apt-get install rabbitmq-server), or set SLUICE_AMQP_URL.",
            pytrace=False,
        )
    return url


@pytest.fixture
async def namespace(amqp_url: str) -> AsyncIterator[str]:
    """A unique topology namespace: this test's exchanges and queues are its own."""
    ns = unique_name("t")
    yield ns
    await delete_topology(amqp_url, Topology(namespace=ns), TEST_KINDS)


async def drain_queue(url: str, queue: str) -> list[DeliveredMessage]:
    """Every message now in ``queue`` (taken with basic_get and acked)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        out = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, Basic.GetEmpty):
                return out
            out.append(message)
    finally:
        await connection.close()


async def delete_topology(url: str, topology: Topology, kinds: Iterable[str]) -> None:
    try:
        conn = await asyncio.wait_for(aiormq.connect(url), 10)
    except Exception:
        return
    try:
        await delete_declared(conn, topology, kinds)
    finally:
        await conn.close()


async def delete_declared(connection: AbstractConnection, topology: Topology,
                          kinds: Iterable[str]) -> None:
    """Delete what ``topology.declare`` made for these kinds: both queues of each kind and
    both exchanges; missing ones are skipped. Services never delete topology, so this is
    for tests and benchmarks that clean up after themselves. A failed delete closes its
    channel, so each one gets a channel of its own."""
    for kind in kinds:
        for queue in (topology.raw_queue(kind), topology.dead_queue(kind)):
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.queue_delete(queue)
    for exchange in (topology.exchange, topology.dead_exchange):
        channel = await connection.channel()
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await channel.exchange_delete(exchange)


async def wait_link_up(link: BrokerLink, timeout: float) -> bool:
    """Whether ``link`` is up within ``timeout`` seconds (it reconnects by itself)."""
    deadline = time.monotonic() + timeout
    while not link.is_up:
        if link.failed.is_set() or time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@dataclass
class PrivateBroker:
    """A RabbitMQ node of this test's own, on its own ports, that the test may stop."""

    node: str
    port: int
    env: dict[str, str]
    base: str

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env, check=True,
                       capture_output=True, timeout=timeout)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup")

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM, when ``rabbitmqctl stop`` could not stop it."""
        try:
            with open(os.path.join(self.base, "pid")) as f:
                pid = int(f.read().strip())
            # A pid file can outlive its node, and its number be someone else's by now:
            # kill only a process that is this node.
            with open(f"/proc/{pid}/environ", "rb") as f:
                is_this_node = f"RABBITMQ_NODENAME={self.node}".encode() in f.read()
        except (OSError, ValueError):
            return
        if is_this_node:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def private_broker(prefix: str = "sluicetest", startup_timeout: float = 120,
                   attempts: int = 3) -> Iterator[PrivateBroker]:
    """A started RabbitMQ node on free ports with a data directory of its own, stopped and
    removed on exit (benchmarks use it too). Needs ``rabbitmq-server`` and ``rabbitmqctl``.

    A node that does not come up is started again on other ports: a port found free can be
    taken (by any outgoing connection's ephemeral port) before the node binds it. When every
    attempt fails, the error carries the node's own log."""
    failures: list[str] = []
    for _ in range(attempts):
        broker = _new_broker(prefix)
        try:
            if _start(broker, startup_timeout):
                break
            failures.append(_log_tail(broker))
        except BaseException:
            _stop(broker)
            raise
        _stop(broker)
    else:
        raise RuntimeError(f"a private RabbitMQ node did not start in {attempts} attempts; "
                           "its logs:\n" + "\n----\n".join(failures))
    try:
        yield broker
    finally:
        _stop(broker)


def _new_broker(prefix: str) -> PrivateBroker:
    name = unique_name(prefix)
    node = f"{name}@{socket.gethostname().split('.')[0]}"
    port = free_port()
    base = tempfile.mkdtemp(prefix=name, dir="/tmp")
    os.chmod(base, 0o777)
    plugins = os.path.join(base, "enabled_plugins")
    with open(plugins, "w") as f:
        f.write("[].\n")
    os.chmod(plugins, 0o666)
    env = dict(os.environ)
    env.update({
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
        "RABBITMQ_PID_FILE": os.path.join(base, "pid"),
    })
    return PrivateBroker(node=node, port=port, env=env, base=base)


def _start(broker: PrivateBroker, timeout: float) -> bool:
    """Start the node and wait until it runs; False when it did not within ``timeout``."""
    subprocess.run(["rabbitmq-server", "-detached"], env=broker.env, check=True, timeout=60)
    deadline = time.monotonic() + timeout
    while True:
        try:
            broker.ctl("await_startup", timeout=60)
            return True
        except subprocess.SubprocessError:
            if time.monotonic() > deadline:
                return False
            time.sleep(1)


def _log_tail(broker: PrivateBroker, chars: int = 3000) -> str:
    texts = []
    log_dir = os.path.join(broker.base, "log")
    for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        with open(os.path.join(log_dir, name), errors="replace") as f:
            texts.append(f"{name}: {f.read()[-chars:]}")
    return "\n".join(texts) or f"(no log in {log_dir})"


def _stop(broker: PrivateBroker) -> None:
    # A node that does not stop in time is killed: it must not outlive its user.
    try:
        broker.ctl("stop", timeout=60)
    except subprocess.SubprocessError:
        broker.kill()
    shutil.rmtree(broker.base, ignore_errors=True)


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateBroker]:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.fail("this test needs a local rabbitmq-server: apt-get install rabbitmq-server "
                    "(./scripts/test.sh installs it)", pytrace=False)
    with private_broker() as broker:
        yield broker
