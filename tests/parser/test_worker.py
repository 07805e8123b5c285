"""``sluice parser`` end to end: real RabbitMQ, the Elasticsearch stand-in (or a real
cluster), parser subprocesses. Every check on stored data compares with the records the
test generated and published."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import msgpack
import pytest

from sluice.errors import StoreUnavailable
from sluice.parser.delivery import Delivery
from sluice.parser.indexer import BulkOutcome
from sluice.parser.settings import ParserSettings
from sluice.parser.stats import ParserMetrics
from sluice.parser.worker import Worker
from sluice.topology import Topology
from tests.support.elasticsearch import EsOutage
from tests.support.rabbitmq import PrivateBroker

from .harness import (
    ROOT,
    ParserProcess,
    Publisher,
    assert_stored_exactly,
    batches,
    make_records,
    parser_env,
    queue_depth,
    read_queue,
    start_parser,
    wait_until,
)

StartParser = Callable[..., ParserProcess]

# Bulk bodies under 1 MiB: the test proxy's aiohttp warns on larger raw-bytes bodies,
# and pytest turns that warning into a failed request. Later flags override these.
SMALL_BULKS = ("--bulk-size", "1000")
# osmem says mapper_parsing_exception; Elasticsearch 8.6+ says document_parsing_exception.
PARSING_REFUSALS = {"es_mapper_parsing_exception", "es_document_parsing_exception"}


@pytest.fixture
def parsers(
    tmp_path: Path, amqp_url: str, namespace: str, es_url: str, es_index_prefix: str
) -> Iterator[StartParser]:
    started: list[ParserProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ParserProcess:
        process = start_parser(
            tmp_path, amqp_url=amqp_url, namespace=namespace, es_url=es_url,
            index_prefix=es_index_prefix, args=(*SMALL_BULKS, *args), env=env,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def pattern(prefix: str, kind: str = "measurement") -> str:
    return f"{prefix}-{kind}-*"


async def indexed_count(es_count: Any, prefix: str) -> int:
    return int(await es_count(pattern(prefix)))


async def test_resent_batches_are_stored_exactly_once(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any,
) -> None:
    records = make_records(3000)
    groups = batches(records, 100)
    async with Publisher(amqp_url, namespace) as pub:
        for n, group in enumerate(groups):
            await pub.publish("measurement", group, message_id=f"c1:{n}")
        # A client that got no ack resends the same batch (same message_id, same body);
        # one of them twice.
        resent = [groups[0], groups[7], groups[7], groups[13], groups[29]]
        for group in resent:
            await pub.publish("measurement", group, message_id="c1:resend")
        total = pub.published
    parser = parsers("--bulk-size", "700", "--prefetch", "10")
    await parser.wait_ready()
    status, _ = await parser.get("/healthz")
    assert status == 200

    async def all_acked() -> bool:
        parser.assert_running()
        return await parser.metric("messages_acked_total") >= total

    await wait_until(all_acked, 120, "every message to be acked")
    hits = await es_fetch_all(pattern(es_index_prefix))
    assert_stored_exactly(hits, records, es_index_prefix)
    # Both daily indices were written (the records straddle midnight).
    assert len({h["_index"] for h in hits}) == 2
    assert await parser.metric("records_duplicate_total") == sum(len(g) for g in resent)
    assert await queue_depth(amqp_url, Topology(namespace).raw_queue("measurement")) == 0


async def test_two_parsers_one_killed_mid_stream_store_every_record_once(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_count: Any,
) -> None:
    records = make_records(12000)
    groups = batches(records, 100)
    args = ("--bulk-size", "300", "--prefetch", "6", "--bulk-linger-ms", "20")
    first, second = parsers(*args), parsers(*args)
    await first.wait_ready()
    await second.wait_ready()
    async with Publisher(amqp_url, namespace) as pub:
        for group in groups[:40]:
            await pub.publish("measurement", group)

        async def first_is_working() -> bool:
            first.assert_running()
            return await first.metric("records_indexed_total") > 0

        await wait_until(first_is_working, 60, "the first parser to index something")
        # Killed with messages unacked: RabbitMQ hands them to the second parser.
        first.signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
        for group in groups[40:]:
            await pub.publish("measurement", group)

    async def all_stored() -> bool:
        second.assert_running()
        return await indexed_count(es_count, es_index_prefix) >= len(records)

    await wait_until(all_stored, 180, "every record to be indexed")
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0
    assert await queue_depth(amqp_url, Topology(namespace).raw_queue("measurement")) == 0
    assert_stored_exactly(await es_fetch_all(pattern(es_index_prefix)), records, es_index_prefix)


async def test_elasticsearch_outage_loses_nothing_and_does_not_spin(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_count: Any, es_outage: EsOutage,
) -> None:
    records = make_records(6000)
    groups = batches(records, 200)
    parser = parsers("--bulk-size", "500", "--retry-cap", "5")
    await parser.wait_ready()
    async with Publisher(amqp_url, namespace) as pub:
        for group in groups[:10]:
            await pub.publish("measurement", group)
        await wait_until(
            lambda: _at_least(es_count, es_index_prefix, 2000), 60, "the first records"
        )
        retries_before = await parser.metric("bulk_retries_total")
        es_outage.pause()
        try:
            for group in groups[10:]:
                await pub.publish("measurement", group)
            cpu_before = parser.cpu_seconds()
            await asyncio.sleep(20)
            cpu_during = parser.cpu_seconds() - cpu_before
            status, body = await parser.get("/readyz")
            retries_during = await parser.metric("bulk_retries_total") - retries_before
        finally:
            es_outage.resume()
    parser.assert_running()
    assert status == 503
    # 20 s of outage is below --stall-timeout (120 s): indexing is not called stalled yet.
    assert json.loads(body)["checks"] == {
        "broker": True, "elasticsearch": False, "indexing": True,
    }
    # Retries back off (exponential, capped at 5 s): a busy loop would retry thousands of
    # times and burn the 20 s of CPU.
    assert 1 <= retries_during <= 60, retries_during
    assert cpu_during < 5, cpu_during

    async def all_acked() -> bool:
        parser.assert_running()
        return await parser.metric("messages_acked_total") >= len(groups)

    await wait_until(all_acked, 120, "the parser to catch up after the outage")
    assert_stored_exactly(await es_fetch_all(pattern(es_index_prefix)), records, es_index_prefix)


async def _at_least(es_count: Any, prefix: str, n: int) -> bool:
    return await indexed_count(es_count, prefix) >= n


async def test_bad_records_and_poison_messages_are_dead_lettered_with_reasons(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_count: Any,
) -> None:
    good = make_records(300)
    bad: list[tuple[Any, str]] = [
        ({k: v for k, v in good[0].items() if k != "metric"} | {"id": "bad-missing"},
         "missing_field"),
        (good[1] | {"id": "bad-value", "value": "hot"}, "bad_value"),
        (good[2] | {"id": "bad-ts", "ts": "yesterday"}, "bad_ts"),
        (["not", "a", "map"], "not_a_map"),
        (good[3] | {"id": "bad-field", "colour": "red"}, "unknown_field"),
    ]
    # Bad records sit between good ones in the same messages.
    first = good[:100] + [record for record, _ in bad[:3]] + good[100:200]
    second = [bad[3][0], *good[200:], bad[4][0]]
    poison_bodies = [b"\xc1 not msgpack", msgpack.packb({"a": "map, not an array"})]
    # "other" records pass the uppercase-only chain; Elasticsearch refuses the mapping of one.
    other_ok = {"id": "other-1", "sensor": "probe", "value": 1.5, "ts": good[0]["ts"]}
    other_refused = {"id": "other-2", "sensor": "probe", "value": "NaN-ish", "ts": good[0]["ts"]}
    messages: list[tuple[str, Any, str]] = [
        ("measurement", first, "batch-1"),
        ("measurement", poison_bodies[0], "poison-1"),
        ("measurement", second, "batch-2"),
        ("measurement", poison_bodies[1], "poison-2"),
        ("other", [other_ok, other_refused], "batch-3"),
    ]
    async with Publisher(amqp_url, namespace, ("measurement", "other")) as pub:
        for kind, payload, message_id in messages:
            await pub.publish(kind, payload, message_id=message_id)
    parser = parsers("--kinds", "measurement,other",
                     "--parsers", "measurement=measurement;other=uppercase")
    await parser.wait_ready()

    async def all_acked() -> bool:
        parser.assert_running()
        return await parser.metric("messages_acked_total") >= 5

    await wait_until(all_acked, 120, "every message to be acked")
    topology = Topology(namespace)
    letters = await read_queue(amqp_url, topology.dead_queue("measurement"), len(bad) + 2)
    poison = [m for m in letters if m.header.properties.headers["x-sluice-reason"] == "poison"]
    assert sorted(m.body for m in poison) == sorted(poison_bodies)
    rejected = {}
    for m in letters:
        headers = m.header.properties.headers
        assert headers["x-sluice-error"]
        if headers["x-sluice-reason"] != "poison":
            rejected[msgpack.packb(msgpack.unpackb(m.body))] = headers["x-sluice-reason"]
    assert rejected == {msgpack.packb(record): reason for record, reason in bad}
    refused = await read_queue(amqp_url, topology.dead_queue("other"), 1)
    assert msgpack.unpackb(refused[0].body) == other_refused
    headers = refused[0].header.properties.headers
    assert headers["x-sluice-reason"] in PARSING_REFUSALS
    assert "value" in headers["x-sluice-error"]
    # The good records around the bad ones are all stored.
    assert_stored_exactly(await es_fetch_all(pattern(es_index_prefix)), good, es_index_prefix)
    other = await es_fetch_all(pattern(es_index_prefix, "other"))
    assert [h["_id"] for h in other] == ["other-1"]
    assert other[0]["_source"] == other_ok | {"sensor": "PROBE"}
    assert (await parser.metrics())['sluice_parser_dead_lettered_total{reason="poison"}'] == 2

    # Every dead letter is also an event document in <prefix>-dead-*, for the API's counts.
    refused_reason = headers["x-sluice-reason"]
    expected = Counter([reason for _, reason in bad] + ["poison", "poison", refused_reason])
    dead = pattern(es_index_prefix, "dead")

    async def events_written() -> bool:
        parser.assert_running()
        return int(await es_count(dead)) >= sum(expected.values())

    await wait_until(events_written, 60, "the dead-letter event documents")
    events = await es_fetch_all(dead)
    assert Counter(h["_source"]["reason"] for h in events) == expected
    assert all(h["_index"].startswith(f"{es_index_prefix}-dead-") for h in events)
    by_record = {h["_source"].get("record_id"): h["_source"] for h in events}
    for record, reason in bad:
        if isinstance(record, dict):
            event = by_record[record["id"]]
            assert (event["reason"], event["kind"], event["parser"]) == (
                reason, "measurement", "measurement")
            assert event["source_message_id"] in ("batch-1", "batch-2")
            assert event["error"] and event["@timestamp"]
    assert (by_record["other-2"]["reason"], by_record["other-2"]["kind"]) == (
        refused_reason, "other")
    assert by_record["other-2"]["parser"] == "uppercase"
    assert by_record["other-2"]["position"] == 1
    poison_events = [h["_source"] for h in events if h["_source"]["reason"] == "poison"]
    assert sorted(e["source_message_id"] for e in poison_events) == ["poison-1", "poison-2"]
    assert all("record_id" not in e and "position" not in e for e in poison_events)
    metrics = await parser.metrics()
    assert metrics['sluice_parser_dead_letter_events_total{result="created"}'] == len(events)
    assert metrics.get("sluice_parser_dead_letter_events_failed_total", 0) == 0

    # The same messages again (a redelivery, or a client resending them): the dead letters
    # are published again, but their event documents answer 409 and are not counted twice.
    async with Publisher(amqp_url, namespace, ("measurement", "other")) as pub:
        for kind, payload, message_id in messages:
            await pub.publish(kind, payload, message_id=message_id)

    async def duplicates_seen() -> bool:
        parser.assert_running()
        return (await parser.metric("messages_acked_total") >= 2 * len(messages)
                and await parser.metric("dead_letter_events_total") >= 2 * len(events))

    await wait_until(duplicates_seen, 60, "the redelivered dead letters")
    metrics = await parser.metrics()
    assert metrics['sluice_parser_dead_letter_events_total{result="duplicate"}'] == len(events)
    assert metrics['sluice_parser_dead_letter_events_total{result="created"}'] == len(events)
    again = await es_fetch_all(dead)
    assert sorted(h["_id"] for h in again) == sorted(h["_id"] for h in events)
    assert Counter(h["_source"]["reason"] for h in again) == expected


async def test_dead_letter_events_failing_to_write_never_hold_the_ack(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_count: Any, es_outage: EsOutage,
) -> None:
    """Elasticsearch down: messages with nothing to index are still dead-lettered and acked;
    the event documents that cannot be written are counted as failures, not retried forever."""
    bad = make_records(1)[0] | {"value": "hot"}
    parser = parsers()
    await parser.wait_ready()
    es_outage.pause()
    try:
        async with Publisher(amqp_url, namespace) as pub:
            await pub.publish("measurement", [bad], message_id="only-bad")
            await pub.publish("measurement", b"\xc1 poison", message_id="poison")

        async def acked() -> bool:
            parser.assert_running()
            return await parser.metric("messages_acked_total") >= 2

        await wait_until(acked, 30, "both messages to be acked while Elasticsearch is down")
        letters = await read_queue(amqp_url, Topology(namespace).dead_queue("measurement"), 2)
        assert sorted(m.header.properties.headers["x-sluice-reason"] for m in letters) == [
            "bad_value", "poison"]

        async def given_up() -> bool:
            parser.assert_running()
            return await parser.metric("dead_letter_events_failed_total") >= 2

        await wait_until(given_up, 60, "the event documents to be given up")
        metrics = await parser.metrics()
        assert metrics['sluice_parser_dead_letter_events_failed_total{cause="store"}'] == 2
    finally:
        es_outage.resume()
    assert parser.events("dead_letter_events_not_written"), parser.log_tail()
    assert await es_count(pattern(es_index_prefix, "dead")) == 0


async def test_sigterm_mid_stream_loses_nothing(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_count: Any,
) -> None:
    records = make_records(10000)
    groups = batches(records, 100)
    first = parsers("--bulk-size", "400", "--prefetch", "20")
    await first.wait_ready()
    async with Publisher(amqp_url, namespace) as pub:
        for group in groups[:30]:
            await pub.publish("measurement", group)
        await wait_until(lambda: _at_least(es_count, es_index_prefix, 1), 60, "some records")
        first.signal(signal.SIGTERM)
        for group in groups[30:]:
            await pub.publish("measurement", group)
    assert first.wait(60) == 0, first.log_tail()
    stopped = first.events("parser_stopped")
    # The drain finished and acked what it indexed: nothing it stored comes back.
    assert [e.get("drained") for e in stopped] == [True], first.log_tail()
    # Whatever it did not finish is still queued: a new parser completes the set.
    second = parsers()
    await second.wait_ready()

    async def all_stored() -> bool:
        second.assert_running()
        return await indexed_count(es_count, es_index_prefix) >= len(records)

    await wait_until(all_stored, 120, "every record to be indexed")
    assert_stored_exactly(await es_fetch_all(pattern(es_index_prefix)), records, es_index_prefix)
    # A drain that indexed without acking would hand those records to the second parser.
    assert await second.metric("records_duplicate_total") == 0


def test_an_unknown_parser_name_stops_startup_with_the_known_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sluice", "parser", "--parsers", "measurement,nonesuch",
         "--http-port", "-1"],
        env=parser_env(), capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 2
    assert "nonesuch" in result.stderr
    assert "known parsers: " in result.stderr
    assert "measurement" in result.stderr and "uppercase" in result.stderr


async def test_a_broker_restart_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, private_rabbitmq: PrivateBroker, es_url: str, es_index_prefix: str,
    es_fetch_all: Any, es_count: Any,
) -> None:
    url, namespace = private_rabbitmq.url, "restart"
    records = make_records(6000)
    groups = batches(records, 100)
    parser = start_parser(tmp_path, amqp_url=url, namespace=namespace, es_url=es_url,
                          index_prefix=es_index_prefix, args=(*SMALL_BULKS, "--prefetch", "8"))
    try:
        await parser.wait_ready()
        async with Publisher(url, namespace) as pub:
            for group in groups[:30]:
                await pub.publish("measurement", group)
        await wait_until(lambda: _at_least(es_count, es_index_prefix, 1), 60, "some records")
        # Messages unacked at the stop come back after the restart; create-by-id makes
        # their second indexing a no-op.
        await asyncio.to_thread(private_rabbitmq.stop_app)
        await asyncio.to_thread(private_rabbitmq.start_app)
        async with Publisher(url, namespace) as pub:
            for group in groups[30:]:
                await pub.publish("measurement", group)

        async def all_stored() -> bool:
            parser.assert_running()
            return await indexed_count(es_count, es_index_prefix) >= len(records)

        await wait_until(all_stored, 180, "every record to be indexed after the restart")
        await wait_until(lambda: _queue_empty(url, namespace), 60, "the queue to drain")
        assert await parser.metric("messages_acked_total") >= 30
        # The whole log, not a tail: how many bulk lines follow the restart varies.
        assert parser.events("broker_link_lost") and len(parser.events("consuming")) >= 2, parser.log()
    finally:
        parser.stop()
    assert_stored_exactly(await es_fetch_all(pattern(es_index_prefix)), records, es_index_prefix)


async def _queue_empty(url: str, namespace: str) -> bool:
    return await queue_depth(url, Topology(namespace).raw_queue("measurement")) == 0


async def test_a_broker_nacking_a_dead_letter_requeues_the_source_message(
    tmp_path: Path, private_rabbitmq: PrivateBroker, es_url: str, es_index_prefix: str,
) -> None:
    """aiormq raises DeliveryError for a Basic.Nack: the source message must be nacked with
    requeue, not left unanswered on an open channel (a prefetch slot lost for good)."""
    url, namespace = private_rabbitmq.url, "dlnack"
    await asyncio.to_thread(
        private_rabbitmq.ctl, "set_policy", "--apply-to", "queues", "dead-full",
        rf"^{namespace}\.dead\.", '{"max-length": 0, "overflow": "reject-publish"}',
    )
    bad = make_records(1)[0] | {"value": "hot"}
    parser = start_parser(tmp_path, amqp_url=url, namespace=namespace, es_url=es_url,
                          index_prefix=es_index_prefix, args=SMALL_BULKS)
    try:
        await parser.wait_ready()
        async with Publisher(url, namespace) as pub:
            # A quorum queue rejects publishes once it is over its limit: fill it first.
            assert pub._channel is not None
            await pub._channel.basic_publish(
                b"filler", exchange=pub.topology.dead_exchange,
                routing_key=pub.topology.dead_routing_key("measurement"),
            )
            await pub.publish("measurement", [bad], message_id="bad-1")

        async def requeued() -> bool:
            parser.assert_running()
            return await parser.metric("messages_requeued_total") >= 2

        try:
            await wait_until(requeued, 30, "the source message to be requeued")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{parser.log_tail()}") from None
        assert await parser.metric("messages_acked_total") == 0
        assert parser.events("dead_letter_rejected"), parser.log_tail()
        assert not parser.events("delivery_abandoned"), parser.log_tail()
    finally:
        parser.stop()


class _Channel:
    def __init__(self) -> None:
        self.is_closed = False
        self.acked: list[int] = []
        self.nacked: list[int] = []

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acked.append(tag)

    async def basic_nack(self, tag: int, requeue: bool = True) -> None:
        assert requeue
        self.nacked.append(tag)


class _Indexer:
    """Fails as scripted, then indexes everything."""

    def __init__(self, failures: Sequence[BaseException]) -> None:
        self.failures = list(failures)

    async def index(self, actions: Sequence[bytes]) -> BulkOutcome:
        if self.failures:
            raise self.failures.pop(0)
        return BulkOutcome(indexed=len(actions))


def _delivery(channel: _Channel, tag: int) -> Delivery:
    return Delivery("measurement", channel, tag, f"m-{tag}", b"", 1,  # type: ignore[arg-type]
                    [b"action"], [0])


async def test_an_unexpected_error_in_a_bulk_requeues_its_batch_and_the_flusher_goes_on() -> None:
    channel = _Channel()
    worker = Worker(
        ParserSettings(amqp_url="amqp://guest:guest@127.0.0.1:1/"), topology=Topology("unit"),
        decoder=SimpleNamespace(),  # type: ignore[arg-type]
        indexer=_Indexer([AttributeError("'str' object has no attribute 'get'"),
                          StoreUnavailable("given up")]),  # type: ignore[arg-type]
        dead_letters=SimpleNamespace(),  # type: ignore[arg-type]
        metrics=ParserMetrics(),
    )
    for tag in (1, 2, 3):  # as the consumer callback does on arrival
        worker._channel_acks(channel).received(tag)  # type: ignore[arg-type]
    for batch in ([_delivery(channel, 1)], [_delivery(channel, 2)]):
        worker._sealed.put_nowait(batch)
    worker._sealed.put_nowait(None)
    worker._dead = SimpleNamespace(publish=_no_letters)  # type: ignore[assignment]
    await asyncio.wait_for(worker._flush_loop(), 10)
    assert (channel.nacked, channel.acked) == ([1, 2], [])
    # The same flusher then handles the next batch normally.
    worker._sealed.put_nowait([_delivery(channel, 3)])
    worker._sealed.put_nowait(None)
    await asyncio.wait_for(worker._flush_loop(), 10)
    assert channel.acked == [3]


async def _no_letters(*args: Any) -> None:
    return None
