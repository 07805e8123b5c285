"""The parser's memory bounds: prefetch in bytes, and the sealed-bulk queue, against a
store that stops answering (a real RabbitMQ; the store is a gate the test opens)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiormq
import msgpack

from sluice.parser.deadletter import DeadLetterPublisher
from sluice.parser.delivery import MessageDecoder
from sluice.parser.indexer import BulkOutcome
from sluice.parser.registry import build_chain
from sluice.parser.settings import ParserSettings
from sluice.parser.stats import ParserMetrics
from sluice.parser.worker import Worker
from sluice.topology import Topology

from .harness import make_records


class GatedStore:
    """Indexes everything, but only once the gate is open."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.indexed = 0

    async def index(self, actions: Sequence[bytes]) -> BulkOutcome:
        await self.gate.wait()
        self.indexed += len(actions)
        return BulkOutcome(indexed=len(actions))


class CountingStore:
    """Indexes everything at once and keeps the size of each bulk."""

    def __init__(self) -> None:
        self.bulks: list[int] = []

    async def index(self, actions: Sequence[bytes]) -> BulkOutcome:
        self.bulks.append(len(actions))
        return BulkOutcome(indexed=len(actions))


async def publish(amqp_url: str, topology: Topology, messages: list[list[dict[str, Any]]]) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await topology.declare(channel, ["measurement"])
        for records in messages:
            await channel.basic_publish(msgpack.packb(records), exchange=topology.exchange,
                                        routing_key=topology.routing_key("measurement"))
    finally:
        await connection.close()


def make_worker(settings: ParserSettings, topology: Topology, store: object) -> Worker:
    """A worker of the measurement parser that indexes into ``store``."""
    return Worker(
        settings, topology=topology,
        decoder=MessageDecoder("px", {"measurement": build_chain(["measurement"])}),
        indexer=store,  # type: ignore[arg-type]
        dead_letters=DeadLetterPublisher(topology, "test"), metrics=ParserMetrics(),
    )


async def wait_until(condition: object, what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_prefetch_is_bounded_in_bytes_and_the_sealed_queue_in_bulks(
    amqp_url: str, namespace: str
) -> None:
    """200 messages of about 10 kB wait in the queue. The store hangs: the parser holds at
    most about twice prefetch_bytes (100 kB) of them, not the 50 messages (500 kB) its
    message prefetch allows, and at most one sealed bulk (plus one from the last window)
    waits for the one flusher. Opened, every record is indexed and every message acked."""
    topology = Topology(namespace)
    messages = [make_records(100, start=i * 100) for i in range(200)]
    size = len(msgpack.packb(messages[0]))
    await publish(amqp_url, topology, messages)

    store = GatedStore()
    prefetch_bytes = 100_000
    settings = ParserSettings(amqp_url=amqp_url, kinds=("measurement",), prefetch=50,
                              prefetch_bytes=prefetch_bytes, bulk_size=300, bulk_concurrency=1)
    worker = make_worker(settings, topology, store)
    worker.start()
    try:
        await wait_until(lambda: worker.paused and not worker._consumers, "the pause")
        await asyncio.sleep(1.0)  # deliveries still on the wire land; not a timing check
        held = worker.held_bytes
        # whichever bound paused it, both hold; the message prefetch alone allows 50 x size
        assert held <= 2 * prefetch_bytes + size < 50 * size, (held, size)
        assert worker.sealed_waiting <= 1 + 1, worker.sealed_waiting
        store.gate.set()
        total = sum(len(records) for records in messages)
        await wait_until(lambda: store.indexed == total and worker.held_bytes == 0,
                         "every record indexed", timeout=120)
    finally:
        await worker.stop(10)
    assert store.indexed == total
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(topology.raw_queue("measurement"), passive=True)
        assert declared.message_count == 0
    finally:
        await connection.close()


async def test_small_messages_are_sent_at_half_the_window_not_after_the_linger(
    amqp_url: str, namespace: str
) -> None:
    """200 messages of 5 records, a prefetch window of 20 messages and a linger of ten
    minutes: the broker sends no more than the window until acks come back, so a bulk that
    waited for 5,000 documents or the linger would hold the parser for ten minutes. Half
    the window (10 messages, 50 documents) seals a bulk instead, and everything is indexed
    long before any linger ends."""
    topology = Topology(namespace)
    messages = [make_records(5, start=i * 5) for i in range(200)]
    await publish(amqp_url, topology, messages)

    store = CountingStore()
    settings = ParserSettings(amqp_url=amqp_url, kinds=("measurement",), prefetch=20,
                              bulk_size=5000, bulk_linger_ms=600_000)
    worker = make_worker(settings, topology, store)
    worker.start()
    try:
        await wait_until(lambda: sum(store.bulks) == 1000 and worker.held_bytes == 0,
                         "every record indexed (a bulk held back for the linger?)", timeout=120)
    finally:
        await worker.stop(10)
    assert sum(store.bulks) == 1000
    assert max(store.bulks) <= 10 * 5, store.bulks


async def test_the_window_is_bounded_in_records(amqp_url: str, namespace: str) -> None:
    """300 messages of 20 records, prefetch_records 200: once message sizes are known the
    window RabbitMQ is given is 200 / 20 = 10 messages, so the parser never holds more than
    the first window (prefetch_bytes over the largest message: 4) plus 10, where its
    message prefetch (1,000) and its bytes bound (about 8,500 such messages) would let it
    take all 300 at once. Small messages get a wide window instead: at 5 records, 1,000."""
    topology = Topology(namespace)
    messages = [make_records(20, start=i * 20) for i in range(300)]
    await publish(amqp_url, topology, messages)

    store = CountingStore()
    settings = ParserSettings(amqp_url=amqp_url, kinds=("measurement",), prefetch=1000,
                              prefetch_records=200, prefetch_bytes=16 * 1024 * 1024,
                              bulk_size=100_000)
    worker = make_worker(settings, topology, store)
    held: list[int] = []

    async def sample() -> None:
        while True:
            held.append(worker._metrics.inflight_messages)
            await asyncio.sleep(0.001)

    sampler = asyncio.ensure_future(sample())
    worker.start()
    try:
        await wait_until(lambda: sum(store.bulks) == 300 * 20 and worker.held_bytes == 0,
                         "every record indexed", timeout=120)
    finally:
        sampler.cancel()
        await worker.stop(10)
    assert sum(store.bulks) == 300 * 20
    assert worker._qos == 10
    assert 0 < max(held) <= 4 + 10, max(held)

    # The arithmetic alone, for other message sizes.
    other = make_worker(ParserSettings(amqp_url=amqp_url, kinds=("measurement",), prefetch=1000,
                                       prefetch_records=5000), topology, store)
    other._avg_body, other._avg_records = 300.0, 5.0
    assert other._wanted_qos() == 1000
    other._avg_body, other._avg_records = 30_000.0, 500.0
    assert other._wanted_qos() == 10


async def test_messages_a_decoder_bug_failed_go_back_to_the_queue(
    amqp_url: str, namespace: str
) -> None:
    """The first decode raises (a bug, not bad input): those messages are requeued, not
    left unanswered where they would hold every later ack back, and all are indexed."""
    topology = Topology(namespace)
    messages = [make_records(5, start=i * 5) for i in range(20)]
    await publish(amqp_url, topology, messages)

    class FailsOnce(MessageDecoder):
        failed = 0

        def decode_many(self, kind: str, arrived: Sequence[Any]) -> Any:
            if not self.failed:
                self.failed = len(arrived)
                raise RuntimeError("a decoder bug")
            return super().decode_many(kind, arrived)

    store = CountingStore()
    settings = ParserSettings(amqp_url=amqp_url, kinds=("measurement",))
    decoder = FailsOnce("px", {"measurement": build_chain(["measurement"])})
    metrics = ParserMetrics()
    worker = Worker(settings, topology=topology, decoder=decoder,
                    indexer=store,  # type: ignore[arg-type]
                    dead_letters=DeadLetterPublisher(topology, "test"), metrics=metrics)
    worker.start()
    try:
        await wait_until(lambda: sum(store.bulks) == 100 and worker.held_bytes == 0
                         and metrics.inflight_messages == 0, "every record indexed")
    finally:
        await worker.stop(10)
    assert decoder.failed > 0
    assert metrics.messages_requeued._value.get() == decoder.failed
    assert sum(store.bulks) == 100  # CountingStore: no duplicates were needed either
