"""``sluice deadletters``: list, show and replay against real RabbitMQ, a real parser and
the Elasticsearch stand-in. Records are dead-lettered for a cause the test controls (a
write-blocked daily index), the cause is fixed, the replay stores each exactly once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import aiormq
import msgpack
import pytest

from sluice.es import ensure_template, index_name, make_client
from sluice.parser.deadletter import DeadLetter, DeadLetterPublisher
from sluice.storeerrors import RETRY_EXHAUSTED
from sluice.topology import Topology
from tests.parser.harness import (
    BASE_TS,
    ROOT,
    ParserProcess,
    Publisher,
    assert_stored_exactly,
    make_records,
    parser_env,
    queue_depth,
    start_parser,
    wait_until,
)

KIND = "measurement"
DAY_MS = 86_400_000


def sluice(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sluice", *args], env=parser_env(),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


async def deadletters(amqp_url: str, namespace: str, *args: str, ok: bool = True) -> Any:
    out = await asyncio.get_running_loop().run_in_executor(
        None, lambda: sluice("deadletters", *args, "--amqp-url", amqp_url,
                             "--namespace", namespace, "--json"))
    assert (out.returncode == 0) is ok, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def parser(
    tmp_path: Path, amqp_url: str, namespace: str, es_url: str, es_index_prefix: str
) -> Iterator[Callable[..., ParserProcess]]:
    started: list[ParserProcess] = []

    def start(*args: str) -> ParserProcess:
        process = start_parser(tmp_path, amqp_url=amqp_url, namespace=namespace,
                               es_url=es_url, index_prefix=es_index_prefix, args=args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def test_dead_letters_are_listed_shown_and_replayed_once_the_cause_is_fixed(
    parser: Callable[..., ParserProcess], amqp_url: str, namespace: str, es_url: str,
    es_index_prefix: str, es_fetch_all: Any,
) -> None:
    """Records refused by a write-blocked index end in the DLQ as es_retry_exhausted;
    list and show leave the queue as it was; after the block is lifted, replay stores
    every one of them exactly once (a letter whose record was already stored answers
    409), and only the poison message stays in the queue."""
    records = make_records(200, step_ms=600)  # straddles midnight: two daily indices
    second_day = index_name(es_index_prefix, KIND, BASE_TS + DAY_MS)
    blocked = [r for r in records if index_name(es_index_prefix, KIND, r["ts"]) == second_day]
    assert 0 < len(blocked) < len(records)
    client = make_client(es_url)
    try:
        await ensure_template(client, es_index_prefix)
        await client.indices.create(index=second_day)
        await client.indices.put_settings(index=second_day, settings={"index.blocks.write": True})
        worker = parser("--item-retry-limit", "2", "--retry-cap", "0.05")
        await worker.wait_ready()
        async with Publisher(amqp_url, namespace) as pub:
            for start in range(0, 200, 50):
                await pub.publish(KIND, records[start:start + 50])
            await pub.publish(KIND, b"\xc1 not msgpack")  # poison: never replayable

        async def settled() -> bool:
            worker.assert_running()
            return await worker.metric("messages_acked_total") >= 5

        await wait_until(settled, 60, "every message to be acked")
        # A record that is stored and dead-lettered as well (a letter published twice
        # when a channel died before the ack): its replay must not double it.
        stored_too = records[0]
        assert stored_too not in blocked
        connection = await aiormq.connect(amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await DeadLetterPublisher(Topology(namespace), "test").publish(
                channel, KIND, [DeadLetter.for_record(RETRY_EXHAUSTED, "again", stored_too, 0)],
                "c:again",
            )
        finally:
            await connection.close()
        dead_queue = Topology(namespace).dead_queue(KIND)
        depth = len(blocked) + 2

        async def all_dead() -> bool:
            return await queue_depth(amqp_url, dead_queue) == depth

        await wait_until(all_dead, 30, "the dead letters")

        for _ in range(2):  # reading twice changes nothing
            (listed,) = await deadletters(amqp_url, namespace, "list")
            assert listed["depth"] == listed["scanned"] == depth
            assert listed["by_reason"] == {RETRY_EXHAUSTED: len(blocked) + 1, "poison": 1}
        shown = await deadletters(amqp_url, namespace, "show", "--reason", RETRY_EXHAUSTED,
                                  "--limit", "3")
        assert len(shown) == 3
        blocked_ids = {r["id"] for r in blocked}
        for letter in shown:
            assert letter["reason"] == RETRY_EXHAUSTED and letter["kind"] == KIND
            assert "cluster_block_exception" in letter["error"]
            assert letter["source_message_id"] and letter["parser"]
            (record,) = letter["records"]
            assert record["id"] in blocked_ids
        assert await queue_depth(amqp_url, dead_queue) == depth

        await client.indices.put_settings(index=second_day,
                                          settings={"index.blocks.write": False})
        report = await deadletters(amqp_url, namespace, "replay", "--kind", KIND,
                                   "--reason", RETRY_EXHAUSTED, "--batch", "40")
        assert report == {"replayed_letters": len(blocked) + 1,
                          "replayed_records": len(blocked) + 1, "kept": 0,
                          "not_replayable": 1, "failed": 0, "error": ""}

        async def replay_settled() -> bool:
            worker.assert_running()
            return await worker.metric("records_duplicate_total") >= 1 and (
                await worker.metric("records_indexed_total") >= len(records))

        await wait_until(replay_settled, 60, "the replayed records to be indexed")
        hits = await es_fetch_all(f"{es_index_prefix}-{KIND}-*")
        assert_stored_exactly(hits, records, es_index_prefix)
        (listed,) = await deadletters(amqp_url, namespace, "list")
        assert listed["by_reason"] == {"poison": 1} and listed["depth"] == 1
    finally:
        await client.close()


async def test_a_replay_that_rabbitmq_refuses_keeps_every_letter_queued(
    amqp_url: str, namespace: str
) -> None:
    """The raw queue refuses every publish (full, reject-publish): the replay exits 1,
    and every letter is still in the dead-letter queue, unchanged."""
    topology = Topology(namespace)
    records = make_records(3)
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.exchange_declare(topology.exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(topology.dead_exchange, exchange_type="topic", durable=True)
        await channel.queue_declare(topology.dead_queue(KIND), durable=True,
                                    arguments={"x-queue-type": "quorum"})
        await channel.queue_bind(topology.dead_queue(KIND), topology.dead_exchange,
                                 topology.dead_routing_key(KIND))
        await channel.queue_declare(topology.raw_queue(KIND), durable=True, arguments={
            "x-max-length": 0, "x-overflow": "reject-publish"})
        await channel.queue_bind(topology.raw_queue(KIND), topology.exchange,
                                 topology.routing_key(KIND))
        letters = [DeadLetter.for_record("es_retry_exhausted", "x", r, i)
                   for i, r in enumerate(records)]
        await DeadLetterPublisher(topology, "test").publish(channel, KIND, letters, "c:1")
    finally:
        await connection.close()

    report = await deadletters(amqp_url, namespace, "replay", "--kind", KIND, ok=False)
    assert report["failed"] == 3 and report["replayed_letters"] == 0
    assert "refused" in report["error"]
    assert await queue_depth(amqp_url, topology.dead_queue(KIND)) == 3
    assert await queue_depth(amqp_url, topology.raw_queue(KIND)) == 0
    shown = await deadletters(amqp_url, namespace, "show", "--limit", "0")
    assert sorted(letter["records"][0]["id"] for letter in shown) == sorted(
        r["id"] for r in records)
    assert {letter["reason"] for letter in shown} == {"es_retry_exhausted"}


async def test_a_batch_rabbitmq_dead_lettered_itself_is_listed_and_replayed_whole(
    amqp_url: str, namespace: str
) -> None:
    """A raw message past the queue's delivery limit is dead-lettered by RabbitMQ (no
    x-sluice-reason): listed as rabbitmq_delivery_limit, and replayed as the whole batch."""
    topology = Topology(namespace, delivery_limit=1)
    records = make_records(3)
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel, [KIND])
        await channel.basic_publish(
            msgpack.packb(records), exchange=topology.exchange,
            routing_key=topology.routing_key(KIND),
            properties=aiormq.spec.Basic.Properties(delivery_mode=2, message_id="c:1"),
        )

        async def dead_lettered() -> bool:
            message = await channel.basic_get(topology.raw_queue(KIND), no_ack=False)
            if message.delivery_tag is not None:
                await channel.basic_nack(message.delivery_tag, requeue=True)
            return await queue_depth(amqp_url, topology.dead_queue(KIND)) == 1

        await wait_until(dead_lettered, 30, "RabbitMQ to dead-letter the message")
    finally:
        await connection.close()

    (listed,) = await deadletters(amqp_url, namespace, "list")
    assert listed["by_reason"] == {"rabbitmq_delivery_limit": 1}
    report = await deadletters(amqp_url, namespace, "replay", "--kind", KIND,
                               "--reason", "rabbitmq_delivery_limit")
    assert (report["replayed_letters"], report["replayed_records"]) == (1, 3)
    assert await queue_depth(amqp_url, topology.dead_queue(KIND)) == 0
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        message = await channel.basic_get(topology.raw_queue(KIND), no_ack=True)
    finally:
        await connection.close()
    assert msgpack.unpackb(message.body) == records
