"""Batches as AMQP messages: properties, confirms, and every nack code."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiormq
import pytest

from sluice.server.publisher import REFUSED, UNAVAILABLE, UNROUTABLE
from tests.support.metrics import sample

from ..support.rabbitmq import free_port
from .conftest import StartServer
from .queues import drain_queue
from .rawclient import RawClient, records_payload


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()


async def test_batch_becomes_one_message_with_every_property(
    start_server: StartServer, clients: list[RawClient], amqp_url: str
) -> None:
    server = await start_server(instance_id="server-a")
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello("client-7")
    payload = records_payload(25)
    before = int(time.time() * 1000)
    client.batch(41, payload, kind="other", count=25)
    assert await client.recv() == {"type": "ack", "seq": 41}
    after = int(time.time() * 1000)

    (message,) = await drain_queue(amqp_url, server.topology.raw_queue("other"))
    assert message.body == payload
    assert message.exchange == server.topology.exchange
    assert message.routing_key == "raw.other"
    props = message.header.properties
    assert props.content_type == "application/msgpack"
    assert props.delivery_mode == 2
    assert props.message_id == "client-7:41"
    headers = dict(props.headers or {})
    received_at = headers.pop("received_at")
    headers.pop("x-delivery-count", None)  # added by the quorum queue
    assert before <= received_at <= after
    assert headers == {"kind": "other", "count": 25, "client_id": "client-7", "seq": 41,
                       "server_id": "server-a"}


async def test_payload_is_passed_through_unparsed(
    start_server: StartServer, clients: list[RawClient], amqp_url: str
) -> None:
    server = await start_server()
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello()
    payloads = {0: b"", 1: b"\xc1 not msgpack at all \x00\xff", 2: bytes(range(256)) * 300}
    for seq, payload in payloads.items():
        client.batch(seq, payload, count=0)
    settled = await client.settle(set(payloads))
    assert {m["type"] for m in settled.values()} == {"ack"}
    messages = await drain_queue(amqp_url, server.topology.raw_queue("measurement"))
    got = {m.header.properties.message_id: m.body for m in messages}
    assert got == {f"test-client:{seq}": body for seq, body in payloads.items()}


async def test_huge_seq_and_count_survive_as_strings(
    start_server: StartServer, clients: list[RawClient], amqp_url: str
) -> None:
    server = await start_server()
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello()
    client.batch(2**64 - 1, b"\x90", count=2**63)
    assert await client.recv() == {"type": "ack", "seq": 2**64 - 1}
    (message,) = await drain_queue(amqp_url, server.topology.raw_queue("measurement"))
    headers = message.header.properties.headers or {}
    assert headers["seq"] == str(2**64 - 1)
    assert headers["count"] == str(2**63)


async def test_unroutable_kind_is_nacked_and_the_connection_goes_on(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    server = await start_server()
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello()
    client.batch(1, b"\x90", kind="nobody_binds_this")
    nack = await client.recv()
    assert nack is not None
    assert (nack["type"], nack["seq"], nack["code"]) == ("nack", 1, UNROUTABLE)
    client.batch(2, b"\x90")
    assert await client.recv() == {"type": "ack", "seq": 2}
    assert sample(server.registry, "sluice_server_nacks_total", code=UNROUTABLE) == 1


async def test_broker_refusal_is_nacked_refused(
    start_server: StartServer, clients: list[RawClient], amqp_url: str, namespace: str
) -> None:
    server = await start_server()
    assert server.port is not None
    full_queue = f"{namespace}.raw.full"
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(full_queue, arguments={"x-max-length": 0,
                                                           "x-overflow": "reject-publish"})
        await channel.queue_bind(full_queue, server.topology.exchange, "raw.full")
        client = await RawClient.connect(server.port)
        clients.append(client)
        await client.hello()
        client.batch(3, b"\x90", kind="full")
        nack = await client.recv()
        assert nack is not None
        assert (nack["type"], nack["seq"], nack["code"]) == ("nack", 3, REFUSED)
    finally:
        channel = await connection.channel()
        await channel.queue_delete(full_queue)
        await connection.close()


async def test_same_client_id_on_two_connections_settles_each_batch_correctly(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    """Identical message ids in flight at once, half of them unroutable: each connection
    still gets the outcome of its own batches."""
    server = await start_server()
    assert server.port is not None
    routable, unroutable = (await RawClient.connect(server.port),
                            await RawClient.connect(server.port))
    clients.extend([routable, unroutable])
    await routable.hello("twin")
    await unroutable.hello("twin")
    seqs = set(range(40))
    for seq in sorted(seqs):
        routable.batch(seq, b"\x90")
        unroutable.batch(seq, b"\x90", kind="nowhere")
    ok = await routable.settle(seqs)
    bad = await unroutable.settle(seqs)
    assert {m["type"] for m in ok.values()} == {"ack"}
    assert {(m["type"], m["code"]) for m in bad.values()} == {("nack", UNROUTABLE)}


async def test_no_broker_means_nack_unavailable_and_not_ready(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    server = await start_server(wait_up=False,
                                amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    await client.hello()
    client.batch(9, b"\x90")
    nack = await client.recv()
    assert nack is not None
    assert (nack["type"], nack["seq"], nack["code"]) == ("nack", 9, UNAVAILABLE)
    assert sample(server.registry, "sluice_server_nacks_total", code=UNAVAILABLE) == 1
