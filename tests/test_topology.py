from __future__ import annotations

import aiormq

from sluice.topology import Topology


async def test_declare_is_idempotent_and_routes_by_kind(amqp_url: str, namespace: str) -> None:
    """Declaring twice (a server and a parser starting) is fine; raw.<kind> reaches the queue."""
    topology = Topology(namespace=namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
        await topology.declare(channel, ["measurement"])
        await channel.basic_publish(b"body", exchange=topology.exchange,
                                    routing_key=topology.routing_key("measurement"))
        got = await channel.basic_get(topology.raw_queue("measurement"), no_ack=True)
        assert got.body == b"body"
        declared = await channel.queue_declare(topology.raw_queue("measurement"), passive=True)
        assert declared.message_count == 0
    finally:
        await conn.close()


async def test_delivery_limit_dead_letters_a_message_that_keeps_failing(
    amqp_url: str, namespace: str
) -> None:
    topology = Topology(namespace=namespace, delivery_limit=2)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
        await channel.basic_publish(b"poison", exchange=topology.exchange,
                                    routing_key=topology.routing_key("measurement"))
        for _ in range(10):
            got = await channel.basic_get(topology.raw_queue("measurement"))
            if got.delivery_tag is None:
                break
            await channel.basic_nack(got.delivery_tag, requeue=True)
        dead = await channel.basic_get(topology.dead_queue("measurement"), no_ack=True)
        assert dead.body == b"poison"
    finally:
        await conn.close()
