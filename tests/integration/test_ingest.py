"""The ingest edge end to end: the real ``sluice client`` and ``sluice server`` as
subprocesses, a real RabbitMQ, and (for the balancer test) a real nginx.

What reaches the queue is always compared with what was *sent*: the NDJSON file the test
wrote, or records regenerated from the seed, never with the client's own report.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

import aiohttp
import aiormq
import msgpack
import pytest
from pamqp.commands import Basic

from sluice.client.sources import MeasurementGenerator
from sluice.records import validate_measurement
from sluice.topology import Topology
from tests.support.metrics import parse_metrics
from tests.support.nginx import StartBalancer
from tests.support.rabbitmq import PrivateBroker, drain_queue, free_port

ROOT = Path(__file__).resolve().parents[2]
KIND = "measurement"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.update(extra)
    return env


def _open_log(path: Path) -> BinaryIO:
    return open(path, "wb")


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    http_port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{self.http_port}/metrics") as response:
            text = await response.text()
        return parse_metrics(text)

    async def terminate(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)


class Servers:
    """Starts ``sluice server`` subprocesses for one test and stops them afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self.started: list[ServerProcess] = []

    async def start(self, amqp_url: str, namespace: str, port: Optional[int] = None,
                    **env: str) -> ServerProcess:
        port = port or free_port()
        http_port = free_port()
        log = self._tmp / f"server-{len(self.started)}.log"
        with _open_log(log) as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sluice", "server", "--host", "127.0.0.1",
                "--port", str(port), "--http-port", str(http_port),
                env=_env(SLUICE_AMQP_URL=amqp_url, SLUICE_NAMESPACE=namespace,
                         SLUICE_INSTANCE_ID=f"server-{len(self.started)}", **env),
                stdout=sink, stderr=sink,
            )
        server = ServerProcess(process, port, http_port, log)
        self.started.append(server)
        await self._wait_ready(server)
        return server

    async def _wait_ready(self, server: ServerProcess) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):
                if server.process.returncode is not None:
                    pytest.fail(f"server exited: {server.log.read_text()}", pytrace=False)
                try:
                    async with session.get(f"http://127.0.0.1:{server.http_port}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        pytest.fail(f"server never became ready: {server.log.read_text()}", pytrace=False)

    async def close(self) -> None:
        for server in self.started:
            if server.process.returncode is None:
                server.process.kill()
                await server.process.wait()


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    started = Servers(tmp_path)
    yield started
    await started.close()


async def start_client(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "client", "--json", *argv, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish_client(process: asyncio.subprocess.Process) -> tuple[int, dict[str, Any], str]:
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    try:
        summary = json.loads(out)
    except ValueError:
        pytest.fail(f"no JSON summary (exit {process.returncode}): {out!r}\n{err.decode()[-3000:]}")
    return process.returncode, summary, err.decode()


async def run_client(*argv: str) -> tuple[int, dict[str, Any], str]:
    return await finish_client(await start_client(*argv))


def records_of(messages: list[aiormq.abc.DeliveredMessage]) -> list[dict[str, Any]]:
    return [r for m in messages for r in msgpack.unpackb(m.body, raw=False)]


def write_ndjson(path: Path, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        record: dict[str, Any] = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "sensor": f"sensor-{i % 13}", "metric": "temperature",
            "value": round(rng.uniform(-20, 40), 3), "ts": 1_700_000_000_000 + i,
        }
        if i % 3 == 0:
            record["unit"] = "C"
        if i % 5 == 0:
            record["tags"] = {"site": f"site-{i % 4}"}
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def regenerate(seed: int, instance: str, sensors: int, count: int) -> list[dict[str, Any]]:
    payload = MeasurementGenerator(seed, instance, sensors).payload(count, 0)
    records: list[dict[str, Any]] = msgpack.unpackb(payload, raw=False)
    return records


def by_id(records: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {r["id"]: (r["sensor"], r["metric"], float(r["value"])) for r in records}


async def until(condition: Any, what: str, timeout: float = 60) -> None:
    """Wait for a state (a readiness poll, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _nacked_some(server: ServerProcess) -> bool:
    return (await server.metrics()).get("sluice_server_nacks_total", 0) > 0


# -- nothing fails: exactly once -------------------------------------------------------------


async def test_generated_records_reach_the_queue_exactly_once_with_properties(
    amqp_url: str, namespace: str, servers: Servers,
) -> None:
    server = await servers.start(amqp_url, namespace)
    count, seed, instance = 12_345, 20240601, "itest-gen"
    code, summary, err = await run_client(
        "--target", server.target, "--count", str(count), "--seed", str(seed),
        "--instance-id", instance, "--sensors", "17", "--connections", "3", "--batch-size", "500",
    )
    assert code == 0, err[-3000:]
    assert summary["acked"] == count and summary["failed"] == 0

    messages = await drain_queue(amqp_url, Topology(namespace).raw_queue(KIND))
    received = records_of(messages)
    sent = regenerate(seed, instance, 17, count)
    assert len(received) == count
    assert Counter(r["id"] for r in received) == Counter(r["id"] for r in sent)  # each once
    assert by_id(received) == by_id(sent)
    for record in received:
        assert validate_measurement(record) == record

    message_ids = set()
    for message in messages:
        props = message.header.properties
        headers = props.headers or {}
        body_count = len(msgpack.unpackb(message.body))
        assert message.delivery.exchange == Topology(namespace).exchange
        assert message.delivery.routing_key == f"raw.{KIND}"
        assert props.content_type == "application/msgpack"
        assert props.delivery_mode == 2
        assert headers["kind"] == KIND
        assert headers["count"] == body_count
        # <instance>-<run token>-<connection>.<session>
        assert re.fullmatch(rf"{re.escape(instance)}-[0-9a-f]{{6}}-[0-2]\.1", headers["client_id"])
        assert headers["server_id"] == "server-0"
        assert isinstance(headers["received_at"], int)
        assert props.message_id == f"{headers['client_id']}:{headers['seq']}"
        message_ids.add(props.message_id)
    assert len(message_ids) == len(messages)


async def test_file_records_reach_the_queue_exactly_once_and_bad_lines_do_not(
    amqp_url: str, namespace: str, servers: Servers, tmp_path: Path,
) -> None:
    server = await servers.start(amqp_url, namespace)
    path = tmp_path / "records.ndjson"
    sent = write_ndjson(path, 3000, seed=3)
    bad = '{"id": "no-ts", "sensor": "s", "metric": "m", "value": 1}\n{not json\n'
    path.write_text(path.read_text() + bad)  # lines 3001 and 3002 are bad
    code, summary, err = await run_client("--target", server.target, "--file", str(path),
                                          "--batch-size", "250")
    assert code == 3, err[-3000:]
    assert summary["invalid_lines"] == [3001, 3002]

    received = records_of(await drain_queue(amqp_url, Topology(namespace).raw_queue(KIND)))
    assert sorted(r["id"] for r in received) == sorted(r["id"] for r in sent)
    assert {r["id"]: {**r, "value": float(r["value"])} for r in sent} == {r["id"]: r for r in received}


# -- failures: at least once, nothing acked is lost -----------------------------------------


async def test_rabbitmq_stopped_and_started_mid_stream(
    private_rabbitmq: PrivateBroker, servers: Servers,
) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    server = await servers.start(private_rabbitmq.url, namespace)
    # --rate paces the stream so the outage lands in the middle of it.
    count, seed, instance = 40_000, 77, "itest-outage"
    client = await start_client(
        "--target", server.target, "--count", str(count), "--rate", "4000", "--seed", str(seed),
        "--instance-id", instance, "--batch-size", "200", "--max-tries", "1000",
    )

    async def acked_some() -> bool:
        return (await server.metrics()).get("sluice_server_acks_total", 0) > 0

    await until(acked_some, "the first acks")
    await asyncio.to_thread(private_rabbitmq.stop_app)
    await until(lambda: _nacked_some(server), "the client to hit the outage (a nack)")
    await asyncio.to_thread(private_rabbitmq.start_app)
    code, summary, err = await finish_client(client)
    assert code == 0, err[-3000:]
    assert summary["acked"] == count
    assert summary["nacked"] + summary["resent"] > 0, "the outage never reached the client"

    received = records_of(await drain_queue(private_rabbitmq.url, Topology(namespace).raw_queue(KIND)))
    expected = regenerate(seed, instance, 100, count)
    assert {r["id"] for r in received} == {r["id"] for r in expected}  # at least once
    assert by_id(received) == by_id(expected)


async def test_an_outage_does_not_use_up_max_tries_and_message_ids_never_repeat(
    private_rabbitmq: PrivateBroker, servers: Servers,
) -> None:
    # `unavailable` nacks and reconnects are transient: even --max-tries 1 rides out a
    # RabbitMQ restart (--give-up-after bounds the wait). Every reconnect says hello with a
    # new client id, so no AMQP message_id names two different batches.
    namespace = f"t{uuid.uuid4().hex[:12]}"
    server = await servers.start(private_rabbitmq.url, namespace)
    count, seed, instance = 20_000, 78, "itest-max-tries"
    client = await start_client(
        "--target", server.target, "--count", str(count), "--rate", "4000", "--seed", str(seed),
        "--instance-id", instance, "--batch-size", "200", "--max-tries", "1",
        "--give-up-after", "120",
    )

    async def acked_some() -> bool:
        return (await server.metrics()).get("sluice_server_acks_total", 0) > 0

    await until(acked_some, "the first acks")
    await asyncio.to_thread(private_rabbitmq.stop_app)
    await until(lambda: _nacked_some(server), "the client to hit the outage (a nack)")
    await asyncio.to_thread(private_rabbitmq.start_app)
    code, summary, err = await finish_client(client)
    assert code == 0, err[-3000:]
    assert summary["acked"] == count
    assert summary["nacked"] + summary["resent"] > 0, "the outage never reached the client"

    messages = await drain_queue(private_rabbitmq.url, Topology(namespace).raw_queue(KIND))
    bodies: dict[str, bytes] = {}
    for message in messages:
        message_id = message.header.properties.message_id
        assert message_id is not None
        assert bodies.setdefault(message_id, message.body) == message.body, message_id
    received = records_of(messages)
    expected = regenerate(seed, instance, 100, count)
    assert {r["id"] for r in received} == {r["id"] for r in expected}
    assert by_id(received) == by_id(expected)


async def test_sigterm_on_the_server_loses_no_acked_batch(
    amqp_url: str, namespace: str, servers: Servers,
) -> None:
    first = await servers.start(amqp_url, namespace)
    count, seed, instance = 30_000, 99, "itest-sigterm"
    client = await start_client(
        "--target", first.target, "--count", str(count), "--rate", "5000", "--seed", str(seed),
        "--instance-id", instance, "--connections", "2", "--batch-size", "250",
        "--max-tries", "1000",
    )

    async def acked_some() -> bool:
        return (await first.metrics()).get("sluice_server_acks_total", 0) > 0

    await until(acked_some, "the first acks")
    assert await first.terminate() == 0
    # The restarted server on the same address: the client must find it and resend.
    second = await servers.start(amqp_url, namespace, port=first.port)
    code, summary, err = await finish_client(client)
    assert code == 0, err[-3000:]
    assert summary["acked"] == count
    assert (await second.metrics())["sluice_server_connections_total"] >= 1

    received = records_of(await drain_queue(amqp_url, Topology(namespace).raw_queue(KIND)))
    expected = regenerate(seed, instance, 100, count)
    assert {r["id"] for r in received} == {r["id"] for r in expected}
    assert by_id(received) == by_id(expected)


# -- through nginx -----------------------------------------------------------------------------


async def test_through_an_nginx_stream_balancer_to_two_servers(
    amqp_url: str, namespace: str, servers: Servers, nginx_stream: StartBalancer, tmp_path: Path,
) -> None:
    a = await servers.start(amqp_url, namespace)
    b = await servers.start(amqp_url, namespace)
    balancer = await asyncio.to_thread(nginx_stream, [a.target, b.target])
    path = tmp_path / "records.ndjson"
    sent = write_ndjson(path, 20_000, seed=8)
    code, summary, err = await run_client("--target", balancer.target, "--file", str(path),
                                          "--connections", "4", "--batch-size", "300")
    assert code == 0, err[-3000:]
    assert summary["acked"] == 20_000

    # Both served client connections and data (nginx's readiness probe alone would give
    # one of them a connection, so count records too).
    for server in (a, b):
        metrics = await server.metrics()
        assert metrics["sluice_server_connections_total"] >= 1
        assert metrics["sluice_server_records_total"] > 0
    received = records_of(await drain_queue(amqp_url, Topology(namespace).raw_queue(KIND)))
    assert sorted(r["id"] for r in received) == sorted(r["id"] for r in sent)


async def test_a_full_queue_refuses_and_the_client_backs_off_and_resends_everything(
    amqp_url: str, namespace: str, servers: Servers,
) -> None:
    """A raw queue at x-max-length-bytes (64 kB here) rejects publishes; the server nacks
    `refused`, the client backs off and resends while a slow consumer drains the queue,
    and every record arrives exactly once (a refused publish is not enqueued)."""
    # A quorum queue learns it is over its limit only after the publishes already on their
    # way are in: 63 batches in flight (the default window) would all be taken in one burst.
    # A window of 3 batches keeps each burst near the limit, so later ones are refused.
    server = await servers.start(amqp_url, namespace, SLUICE_QUEUE_MAX_BYTES="65536",
                                 SLUICE_MAX_INFLIGHT="4")
    count, seed, instance = 6_000, 91, "itest-full-queue"
    client = await start_client(
        "--target", server.target, "--count", str(count), "--seed", str(seed),
        "--instance-id", instance, "--batch-size", "200", "--max-tries", "1",
        "--give-up-after", "300",
    )
    queue = Topology(namespace).raw_queue(KIND)
    drained: list[aiormq.abc.DeliveredMessage] = []
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        # Let the queue fill until the server has refused a publish (three 200-record
        # batches are over 64 kB), however slowly a loaded machine runs the client; only
        # then drain it, slowly.
        while client.returncode is None:
            if (await server.metrics()).get("sluice_server_nacks_total", 0) > 0:
                break
            await asyncio.sleep(0.05)
        while client.returncode is None:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, Basic.GetEmpty):
                await asyncio.sleep(0.05)
            else:
                drained.append(message)
                await asyncio.sleep(0.02)  # slower than the client: the queue stays full
    finally:
        await connection.close()
    code, summary, err = await finish_client(client)
    assert code == 0, err[-3000:]
    assert summary["acked"] == count and summary["failed"] == 0
    assert summary["nacked"] > 0, "the queue never filled up"
    received = records_of(drained + await drain_queue(amqp_url, queue))
    expected = regenerate(seed, instance, 100, count)
    assert Counter(r["id"] for r in received) == Counter(r["id"] for r in expected)
    assert by_id(received) == by_id(expected)
