"""The server's memory bounds: the global in-flight byte budget, unknown keys skipped
unread, and a bound on connections being refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgpack
import pytest

from sluice.protocol import encode_batch
from sluice.server.app import MAX_REFUSING, IngestServer
from tests.support.metrics import sample

from ..support.rabbitmq import PrivateBroker
from .conftest import StartServer
from .queues import message_ids, poll
from .rawclient import RawClient, frame
from .test_app import block_publishers, unblock_publishers

MIB = 1 << 20


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()


async def connect(clients: list[RawClient], server: IngestServer, client_id: str) -> RawClient:
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello(client_id)
    return client


async def test_the_byte_budget_holds_every_connection_back_until_confirms_free_it(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker,
    namespace: str,
) -> None:
    """With RabbitMQ blocked, four connections offering 1 MiB batches get three in flight
    between them (3.5 MiB budget), whatever max_inflight allows; the rest wait unread, and
    a connection held only by the budget is not idle. Unblocked, everything is acked."""
    server = await start_server(amqp_url=private_rabbitmq.url, max_frame=MIB + 1024,
                                max_inflight=64, max_inflight_bytes=3 * MIB + MIB // 2,
                                idle_timeout=3.0)
    block_publishers(private_rabbitmq)  # first: it takes longer than idle_timeout
    conns = [await connect(clients, server, f"c{i}") for i in range(4)]
    payload = b"\x00" * MIB
    for client in conns:
        for seq in range(4):
            client.batch(seq, payload)
    def state() -> tuple[int, int, int, int]:
        return (server.budget.waiting, server.publisher.inflight, server.budget.used,
                server.connections)

    # every connection ends up waiting for bytes, three batches in flight between them
    deadline = asyncio.get_running_loop().time() + 60
    while state()[:2] != (4, 3):
        assert asyncio.get_running_loop().time() < deadline, state()
        await asyncio.sleep(0.05)
    await asyncio.sleep(3.5)  # past idle_timeout: time to misbehave, not a timing check
    waiting, inflight, used, connections = state()
    assert (waiting, inflight, connections) == (4, 3, 4), state()  # none closed as idle
    assert used <= server.settings.max_inflight_bytes

    unblock_publishers(private_rabbitmq)
    for client in conns:
        settled = await client.settle(set(range(4)), timeout=120)
        assert {m["type"] for m in settled.values()} == {"ack"}
    assert server.budget.used == 0
    queued = await message_ids(private_rabbitmq.url, f"{namespace}.raw.measurement")
    assert sorted(queued) == sorted(f"c{i}:{seq}" for i in range(4) for seq in range(4))


async def test_small_batches_wait_for_the_budget_too(
    start_server: StartServer, clients: list[RawClient], private_rabbitmq: PrivateBroker
) -> None:
    """Batches under the control-frame cap are read first, then held at the budget."""
    server = await start_server(amqp_url=private_rabbitmq.url, max_frame=1024,
                                max_inflight_bytes=1024)
    client = await connect(clients, server, "small")
    block_publishers(private_rabbitmq)
    body = msgpack.packb([{"x": "y" * 200}])
    for seq in range(8):
        client.batch(seq, body)
    size = len(encode_batch(0, "measurement", 1, body)) - 4  # the frame body is counted
    await poll(lambda: server.budget.waiting == 1)
    assert sample(server.registry, "sluice_server_batches_total") == 1024 // size
    assert server.budget.used == 1024 // size * size
    unblock_publishers(private_rabbitmq)
    settled = await client.settle(set(range(8)), timeout=60)
    assert {m["type"] for m in settled.values()} == {"ack"}
    assert server.budget.used == 0


async def test_a_frame_of_nested_empty_maps_under_an_unknown_key_is_skipped(
    start_server: StartServer, clients: list[RawClient], namespace: str, amqp_url: str
) -> None:
    """4 MiB of empty maps under an unknown key: the batch is acked as if the key were
    absent, and the server never builds millions of dicts (see test_protocol for the
    memory measurement)."""
    server = await start_server()
    client = await connect(clients, server, "nested")
    count = 4 * MIB - 64
    body = (b"\x86\xa4type\xa5batch\xa3seq\x07\xa4kind\xabmeasurement\xa5count\x01"
            b"\xa7payload\xc4\x01\x90\xa5extra\xdd" + count.to_bytes(4, "big") + b"\x80" * count)
    client.send_raw(frame(body))
    assert await client.recv() == {"type": "ack", "seq": 7}
    assert await message_ids(amqp_url, f"{namespace}.raw.measurement") == ["nested:7"]
    assert server.budget.used == 0


async def test_refused_connections_count_against_a_bound(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    """Past max_connections each refusal lingers (error frame, then reading until the
    client closes); past MAX_REFUSING such refusals at once, connections are reset at once,
    so a connect flood holds no memory. The served connection carries on."""
    server = await start_server(max_connections=1)
    served = await connect(clients, server, "served")
    assert server.port is not None
    flood = [await RawClient.connect(server.port) for _ in range(MAX_REFUSING + 50)]
    clients.extend(flood)
    await poll(lambda: sample(server.registry, "sluice_server_errors_total", code="too_many_connections") == len(flood))
    assert server.refusing == MAX_REFUSING
    answers = [await client.recv(timeout=30) for client in flood]
    with_error = [a for a in answers if a is not None]
    assert len(with_error) == MAX_REFUSING
    assert {a["code"] for a in with_error} == {"too_many_connections"}
    for client in flood:
        await client.close()
    await poll(lambda: server.refusing == 0)
    served.batch(1, b"\x90")
    assert await served.recv() == {"type": "ack", "seq": 1}
