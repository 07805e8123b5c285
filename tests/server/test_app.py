"""The server as a whole: ops side port, graceful shutdown, backpressure against a blocked
broker, and a broker that stops and starts underneath it."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sluice.protocol import ErrorCode
from sluice.server.app import IngestServer
from sluice.server.publisher import UNAVAILABLE
from tests.support.metrics import parse_metrics, sample

from ..support.rabbitmq import PrivateBroker
from .conftest import StartServer
from .queues import message_ids, poll
from .rawclient import RawClient, records_payload


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, server: IngestServer, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{server.http_port}{path}") as response:
        return response.status, await response.text()


async def until_status(http: aiohttp.ClientSession, server: IngestServer, path: str,
                       status: int, attempts: int = 600) -> None:
    for _ in range(attempts):
        if (await get(http, server, path))[0] == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never answered {status}")


async def connect(clients: list[RawClient], server: IngestServer, client_id: str) -> RawClient:
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello(client_id)
    return client


def block_publishers(broker: PrivateBroker) -> None:
    """A memory alarm: RabbitMQ stops reading from publishing connections."""
    broker.ctl("set_vm_memory_high_watermark", "0")


def unblock_publishers(broker: PrivateBroker) -> None:
    broker.ctl("set_vm_memory_high_watermark", "0.4")


async def test_ops_endpoints(start_server: StartServer, clients: list[RawClient],
                             http: aiohttp.ClientSession) -> None:
    server = await start_server()
    assert await get(http, server, "/healthz") == (200, '{"status": "ok"}')
    status, body = await get(http, server, "/readyz")
    assert status == 200 and '"broker": true' in body
    client = await connect(clients, server, "ops")
    client.batch(0, records_payload(4), count=4)
    assert await client.recv() == {"type": "ack", "seq": 0}
    status, text = await get(http, server, "/metrics")
    assert status == 200
    metrics = parse_metrics(text)
    expected = {"sluice_server_connections_open": 1, "sluice_server_connections_total": 1,
                'sluice_server_frames_total{type="batch"}': 1, "sluice_server_batches_total": 1,
                "sluice_server_records_total": 4, "sluice_server_acks_total": 1,
                "sluice_server_broker_up": 1, "sluice_server_confirm_latency_seconds_count": 1,
                "sluice_server_bytes_total": len(records_payload(4))}
    assert {name: metrics.get(name) for name in expected} == expected


async def test_shutdown_acks_what_it_read_then_says_shutting_down(
    start_server: StartServer, clients: list[RawClient], amqp_url: str
) -> None:
    server = await start_server()
    client = await connect(clients, server, "drain")
    for seq in range(200):
        client.batch(seq, records_payload(5, start=seq * 5), count=5)
    await poll(lambda: sample(server.registry, "sluice_server_batches_total") > 0)
    await server.shutdown()

    frames = await client.recv_until_closed()
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == ErrorCode.SHUTTING_DOWN
    settled = frames[:-1]
    assert {m["type"] for m in settled} == {"ack"}
    acked = {m["seq"] for m in settled}
    assert len(acked) == len(settled) == sample(server.registry, "sluice_server_batches_total")
    queued = await message_ids(amqp_url, server.topology.raw_queue("measurement"))
    assert {f"drain:{seq}" for seq in acked} <= set(queued)
    assert server.port is not None
    with pytest.raises(ConnectionRefusedError):
        await RawClient.connect(server.port)


async def test_backpressure_stops_reading_a_client_the_broker_cannot_keep_up_with(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url, max_inflight=2)
    client = await connect(clients, server, "pushy")
    other = await connect(clients, server, "other")
    block_publishers(private_rabbitmq)

    batches, size = 64, 1 << 20
    payload = b"\x00" * size
    for seq in range(batches):
        client.batch(seq, payload)
    # The server takes max_inflight batches and then stops reading this socket ...
    await poll(lambda: sample(server.registry, "sluice_server_batches_total") == 2)
    await asyncio.sleep(1.0)  # give a misbehaving server time to read on (not a timing check)
    assert sample(server.registry, "sluice_server_batches_total") == 2
    assert server.publisher.inflight == 2
    # ... so what the kernel buffers cannot hold stays with the client: its writes stall.
    # (the kernel buffers on both ends may hold tens of MiB; what is left is the evidence)
    assert client.writer.transport.get_write_buffer_size() > 8 * size

    # Another connection is not held back by it: its batch is read (and waits on the broker).
    other.batch(0, b"\x90")
    await poll(lambda: sample(server.registry, "sluice_server_batches_total") == 3)

    unblock_publishers(private_rabbitmq)
    settled = await client.settle(set(range(batches)), timeout=120)
    assert {m["type"] for m in settled.values()} == {"ack"}
    assert await other.recv() == {"type": "ack", "seq": 0}


async def test_broker_restart_nacks_unavailable_then_recovers(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker,
    http: aiohttp.ClientSession,
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url)
    client = await connect(clients, server, "restart")
    client.batch(0, b"\x90")
    assert await client.recv() == {"type": "ack", "seq": 0}

    # Batches the broker has but has not confirmed when it goes away ...
    block_publishers(private_rabbitmq)
    for seq in range(1, 6):
        client.batch(seq, b"\x90")
    await poll(lambda: server.publisher.inflight == 5)
    private_rabbitmq.stop_app()
    # ... are nacked unavailable, as is anything sent while it is down.
    lost = await client.settle(set(range(1, 6)))
    assert {(m["type"], m["code"]) for m in lost.values()} == {("nack", UNAVAILABLE)}
    assert (await get(http, server, "/readyz"))[0] == 503
    client.batch(6, b"\x90")
    nack = await client.recv()
    assert nack is not None and (nack["seq"], nack["code"]) == (6, UNAVAILABLE)
    assert (await get(http, server, "/healthz"))[0] == 200

    private_rabbitmq.start_app()
    unblock_publishers(private_rabbitmq)
    await until_status(http, server, "/readyz", 200)  # it reconnects with backoff
    # The same connection carries on; the client resends what was nacked.
    for seq in range(1, 7):
        client.batch(seq, b"\x90")
    settled = await client.settle(set(range(1, 7)), timeout=60)
    assert {m["type"] for m in settled.values()} == {"ack"}
    assert server.link.connects == 2
    queued = await message_ids(private_rabbitmq.url, server.topology.raw_queue("measurement"))
    assert {f"restart:{seq}" for seq in range(7)} <= set(queued)


async def test_shutdown_with_a_blocked_broker_nacks_what_it_cannot_confirm(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url, max_inflight=4)
    client = await connect(clients, server, "stuck")
    block_publishers(private_rabbitmq)
    for seq in range(10):
        client.batch(seq, b"\x90")
    await poll(lambda: server.publisher.inflight == 4)
    await server.shutdown(drain_timeout=0.3)
    frames = await client.recv_until_closed()
    assert [(m["type"], m.get("seq"), m["code"]) for m in frames] == [
        *(("nack", seq, UNAVAILABLE) for seq in range(4)),
        ("error", None, ErrorCode.SHUTTING_DOWN),
    ]
    unblock_publishers(private_rabbitmq)


def reset(client: RawClient) -> None:
    """Vanish with a TCP reset, as a killed or crashed client's host may."""
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()


async def test_clients_vanishing_behind_a_blocked_broker_free_their_slots_and_payloads(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url, max_inflight=2, idle_timeout=5.0)
    block_publishers(private_rabbitmq)
    payload = b"\x00" * (1 << 20)
    crashed = [await connect(clients, server, f"crashed{n}") for n in range(3)]
    closed = await connect(clients, server, "closed")
    for client in [*crashed, closed]:
        client.batch(0, payload)
        client.batch(1, payload)  # at the limit: the server still reads, and sees the end
    await poll(lambda: server.publisher.inflight == 8)

    for client in crashed:
        reset(client)
    # A reset is seen at once: nothing can be delivered, so nothing is waited for.
    await poll(lambda: server.connections == 1, timeout=4)  # not the 5 s drain bound
    assert server.publisher.inflight == 2
    # A plain close is an end of stream, like bye: owed acks are awaited, but not forever.
    closed.writer.transport.abort()
    await poll(lambda: server.connections == 0)
    assert server.publisher.inflight == 0
    assert sample(server.registry, "sluice_server_batches_total") == 8
    unblock_publishers(private_rabbitmq)


async def test_at_the_limit_pings_are_answered_and_bye_is_bounded(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url, max_inflight=2, idle_timeout=1.0)
    # Blocked first: rabbitmqctl can take longer than idle_timeout on a loaded machine, and
    # the connection must not idle out before its batches are sent.
    block_publishers(private_rabbitmq)
    client = await connect(clients, server, "patient")
    client.batch(0, b"\x90")
    client.batch(1, b"\x90")
    await poll(lambda: server.publisher.inflight == 2)
    client.send({"type": "ping", "nonce": 7})
    assert await client.recv() == {"type": "pong", "nonce": 7}
    client.send({"type": "bye"})
    # RabbitMQ confirms nothing while blocked: after idle_timeout the owed are nacked.
    frames = await client.recv_until_closed(timeout=10)
    assert [(m["type"], m["seq"], m["code"]) for m in frames] == [
        ("nack", 0, UNAVAILABLE), ("nack", 1, UNAVAILABLE)]
    await poll(lambda: server.connections == 0)
    assert server.publisher.inflight == 0
    unblock_publishers(private_rabbitmq)


async def test_a_batch_past_the_limit_is_held_until_a_slot_frees(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    server = await start_server(amqp_url=private_rabbitmq.url, max_inflight=2)
    client = await connect(clients, server, "eager")
    block_publishers(private_rabbitmq)
    for seq in range(3):
        client.batch(seq, b"\x90")
    client.send({"type": "ping", "nonce": "after"})
    await poll(lambda: server.publisher.inflight == 2)
    await asyncio.sleep(0.5)  # not a timing check: time to misbehave
    assert sample(server.registry, "sluice_server_batches_total") == 2  # the third is held, the ping not read yet
    unblock_publishers(private_rabbitmq)
    frames = [await client.recv() for _ in range(4)]
    assert {"type": "pong", "nonce": "after"} in frames
    assert sorted(m["seq"] for m in frames if m is not None and m["type"] == "ack") == [0, 1, 2]
