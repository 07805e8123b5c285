"""``/api/v1/pipeline``: queue depths and consumers from RabbitMQ, dead letters, ingest rate."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import pytest

from sluice.api.pipeline import QueueInspector
from sluice.es import ensure_template, index_name, make_client
from sluice.topology import Topology
from tests.parser.harness import Publisher, make_records, start_parser, wait_until
from tests.support.api import index_documents, iso_ms, make_measurements
from tests.support.rabbitmq import free_port

from .test_aggregations import get_json

pytestmark = pytest.mark.timeout(120)


async def until(client: Any, path: str, check: Any, deadline_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        body = await get_json(client, path)
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


def by_queue(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["queue"]: r for r in rows}


async def test_queue_depths_consumers_and_ingest_rate(api_client, es_url, es_index_prefix, amqp_url, namespace):
    topology = Topology(namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
        for i in range(5):
            await channel.basic_publish(b"raw %d" % i, exchange=topology.exchange,
                                        routing_key=topology.routing_key("measurement"))
        for i in range(3):
            await channel.basic_publish(b"dead %d" % i, exchange=topology.dead_exchange,
                                        routing_key=topology.dead_routing_key("measurement"))
        now = int(time.time() * 1000)
        fresh = make_measurements(40, seed=5, ingested_at=now - 20_000)
        old = make_measurements(25, seed=6)  # ingested days ago
        await index_documents(es_url, es_index_prefix, fresh + old)

        client = await api_client(es_index_prefix, amqp_url=amqp_url, namespace=namespace,
                                  kinds=("measurement", "other"))
        body = await until(client, "/api/v1/pipeline?minutes=5",
                           lambda b: b["queues"][0]["messages"] == 5 and b["dead_letters"]["total"] == 3)
        assert body["broker"] == {"up": True, "error": None}
        queues = by_queue(body["queues"])
        assert queues[topology.raw_queue("measurement")] == {
            "kind": "measurement", "queue": topology.raw_queue("measurement"),
            "exists": True, "messages": 5, "consumers": 0,
        }
        assert queues[topology.raw_queue("other")]["exists"] is False
        assert queues[topology.raw_queue("other")]["messages"] is None
        dead = by_queue(body["dead_letters"]["queues"])
        assert dead[topology.dead_queue("measurement")]["messages"] == 3
        assert body["dead_letters"]["by_reason"] == []

        ingest = body["ingest"]
        assert ingest["count"] == 40
        assert sum(b["count"] for b in ingest["buckets"]) == 40
        assert len(ingest["buckets"]) == 5
        window_s = (_ms(ingest["to"]) - _ms(ingest["from"])) / 1000
        assert ingest["rate_per_s"] == pytest.approx(40 / window_s)

        # A consumer with prefetch 1 holds one message unacked: 4 stay ready.
        consumer = await conn.channel()
        await consumer.basic_qos(prefetch_count=1)

        async def hold(message: Any) -> None:
            pass

        await consumer.basic_consume(topology.raw_queue("measurement"), hold, no_ack=False)
        body = await until(client, "/api/v1/pipeline",
                           lambda b: b["queues"][0]["consumers"] == 1 and b["queues"][0]["messages"] == 4)
        assert body["queues"][0]["queue"] == topology.raw_queue("measurement")
    finally:
        await conn.close()


def _ms(iso: str) -> int:
    import datetime as dt

    moment = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


async def test_dead_letter_documents_are_counted_by_reason(api_client, es_url, es_index_prefix):
    """Whatever is in ``<prefix>-dead-*`` (``reason`` a keyword) is counted by reason."""
    client_es = make_client(es_url)
    now = int(time.time() * 1000)
    index = index_name(es_index_prefix, "dead", now)
    try:
        await ensure_template(client_es, es_index_prefix)
    finally:
        await client_es.close()
    mapping = {"mappings": {"properties": {"reason": {"type": "keyword"}}}}
    async with aiohttp.ClientSession() as session, session.put(f"{es_url}/{index}", json=mapping) as r:
        assert r.status == 200, await r.text()
    reasons = ["bad_value"] * 4 + ["poison"] * 2 + ["missing_field"] * 4
    docs = [{"id": f"dl-{i}", "ts": now - i, "reason": reason, "kind": "measurement",
             "@timestamp": iso_ms(now - i * 1000), "record_id": f"r-{i}", "error": f"e{i}"}
            for i, reason in enumerate(reasons)]
    await index_documents(es_url, es_index_prefix, docs, kind="dead", template=False)
    client = await api_client(es_index_prefix)  # no RabbitMQ URL: queues unknown
    body = await get_json(client, "/api/v1/pipeline")
    assert body["dead_letters"]["by_reason"] == [
        {"reason": "bad_value", "count": 4},
        {"reason": "missing_field", "count": 4},
        {"reason": "poison", "count": 2},
    ]
    # The latest few events, newest first, as samples of what was dead-lettered.
    samples = body["dead_letters"]["samples"]
    assert [x["record_id"] for x in samples] == [f"r-{i}" for i in range(5)]
    assert [(x["reason"], x["error"]) for x in samples] == [(reasons[i], f"e{i}") for i in range(5)]
    assert body["broker"]["up"] is False
    assert body["queues"][0]["messages"] is None and body["dead_letters"]["total"] is None


async def test_dead_letters_by_reason_are_what_a_parser_dead_lettered(
    api_client, tmp_path: Path, amqp_url, namespace, es_url, es_index_prefix
):
    """A real ``sluice parser`` run dead-letters bad records and a poison message; the
    pipeline view counts exactly those, by reason, from the parser's event documents."""
    good = make_records(30)
    bad: list[tuple[Any, str]] = [
        ({k: v for k, v in good[0].items() if k != "metric"} | {"id": "bad-1"}, "missing_field"),
        (good[1] | {"id": "bad-2", "value": "hot"}, "bad_value"),
        (good[2] | {"id": "bad-3", "value": "cold"}, "bad_value"),
        (["not", "a", "map"], "not_a_map"),
    ]
    async with Publisher(amqp_url, namespace) as pub:
        await pub.publish("measurement", good[:15] + [r for r, _ in bad[:2]])
        await pub.publish("measurement", b"\xc1 not msgpack")
        await pub.publish("measurement", [r for r, _ in bad[2:]] + good[15:])
    expected = Counter([reason for _, reason in bad] + ["poison"])
    parser = start_parser(tmp_path, amqp_url=amqp_url, namespace=namespace, es_url=es_url,
                          index_prefix=es_index_prefix)
    try:
        await parser.wait_ready()

        async def all_acked() -> bool:
            parser.assert_running()
            return await parser.metric("messages_acked_total") >= 3

        await wait_until(all_acked, 60, "every message to be acked")
        client = await api_client(es_index_prefix, amqp_url=amqp_url, namespace=namespace)
        body = await until(
            client, "/api/v1/pipeline",
            lambda b: sum(r["count"] for r in b["dead_letters"]["by_reason"] or [])
            >= sum(expected.values()),
        )
    finally:
        parser.stop()
    ordered = sorted(expected.items(), key=lambda item: (-item[1], item[0]))
    assert body["dead_letters"]["by_reason"] == [
        {"reason": reason, "count": count} for reason, count in ordered
    ]
    # The authoritative copies in RabbitMQ: one dead letter per counted event.
    assert body["dead_letters"]["total"] == sum(expected.values())


async def test_broker_down_still_answers(api_client, es_index_prefix):
    client = await api_client(es_index_prefix, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    body = await get_json(client, "/api/v1/pipeline")
    assert body["broker"]["up"] is False
    assert "RabbitMQ" in body["broker"]["error"]
    assert body["queues"][0]["exists"] is None
    # Dead-letter documents are not there: an empty list, not an error.
    assert body["dead_letters"]["by_reason"] == []


async def test_queue_inspector_skips_a_dead_node_of_its_list(amqp_url: str, namespace: str) -> None:
    """Given a cluster's URLs, the inspector answers from a live node when the first is down."""
    topology = Topology(namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        await topology.declare(channel, ["measurement"])
    finally:
        await conn.close()
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    inspector = QueueInspector(f"{dead},{amqp_url}")
    try:
        states = await inspector.states([topology.raw_queue("measurement")])
        assert states is not None, inspector.error
        assert states[0].exists and states[0].messages == 0
    finally:
        await inspector.close()
