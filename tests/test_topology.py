from __future__ import annotations

import asyncio

import aiormq
import pytest

from sluice.errors import ConfigError
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
        # at-least-once dead-lettering moves the message once the dead queue confirms it:
        # asynchronously, so wait for it (with a deadline)
        for _ in range(200):
            dead = await channel.basic_get(topology.dead_queue("measurement"), no_ack=True)
            if dead.delivery_tag is not None:
                break
            await asyncio.sleep(0.05)
        assert dead.body == b"poison"
    finally:
        await conn.close()


async def test_a_queue_with_other_arguments_is_a_config_error_naming_the_fix(
    amqp_url: str, namespace: str
) -> None:
    """A raw queue declared by an older version (no length limit) cannot be redeclared:
    RabbitMQ answers PRECONDITION_FAILED, and sluice says which queue and what to do."""
    topology = Topology(namespace=namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        old = {k: v for k, v in topology.raw_queue_arguments("measurement").items()
               if k not in ("x-overflow", "x-max-length-bytes", "x-dead-letter-strategy")}
        await channel.queue_declare(topology.raw_queue("measurement"), durable=True,
                                    arguments=old)
        channel = await conn.channel()
        with pytest.raises(ConfigError) as info:
            await topology.declare(channel, ["measurement"])
        message = str(info.value)
        assert topology.raw_queue("measurement") in message
        assert "PRECONDITION_FAILED" in message
        assert f"rabbitmqctl delete_queue {topology.raw_queue('measurement')}" in message
    finally:
        await conn.close()


async def test_a_full_queue_nacks_publishes_and_keeps_what_it_holds(
    amqp_url: str, namespace: str
) -> None:
    """x-overflow reject-publish at x-max-length-bytes: the publish past the limit is
    nacked (servers turn that into a `refused` nack), nothing already queued is dropped."""
    topology = Topology(namespace=namespace, max_length_bytes=10_000)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await topology.declare(channel, ["measurement"])
        outcomes = []
        for i in range(6):
            try:
                outcome = await channel.basic_publish(
                    bytes([i]) * 4000, exchange=topology.exchange,
                    routing_key=topology.routing_key("measurement"))
                outcomes.append(type(outcome).__name__)
            except aiormq.exceptions.DeliveryError as exc:  # how aiormq reports a nack
                outcomes.append(type(exc.frame).__name__)
        # RabbitMQ refuses once the queue is over its limit: 3 x 4000 > 10000
        assert outcomes == ["Ack", "Ack", "Ack", "Nack", "Nack", "Nack"]
        kept = []
        for _ in range(3):
            got = await channel.basic_get(topology.raw_queue("measurement"), no_ack=True)
            kept.append(got.body[:1])
        assert kept == [b"\x00", b"\x01", b"\x02"]
        # drained, it takes publishes again
        again = await channel.basic_publish(b"x", exchange=topology.exchange,
                                            routing_key=topology.routing_key("measurement"))
        assert type(again).__name__ == "Ack"
    finally:
        await conn.close()


async def test_dead_lettering_is_at_least_once_into_a_bounded_queue(
    amqp_url: str, namespace: str
) -> None:
    topology = Topology(namespace=namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
        raw = await channel.queue_declare(topology.raw_queue("measurement"), passive=True)
        assert raw.message_count == 0
    finally:
        await conn.close()
    args = topology.raw_queue_arguments("measurement")
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"  # at-least-once requires it
    assert topology.dead_queue_arguments()["x-max-length-bytes"] == topology.max_length_bytes
