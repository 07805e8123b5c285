"""``sluice parser`` against a store that keeps failing some items: the per-item retry cap
ends in the dead-letter queue with ``es_retry_exhausted``, and ``/readyz`` says when
nothing has been indexed for a while although work is waiting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import msgpack
import pytest

from sluice.storeerrors import RETRY_EXHAUSTED
from sluice.topology import Topology
from tests.support.elasticsearch import EsOutage

from .harness import (
    ParserProcess,
    Publisher,
    assert_stored_exactly,
    make_records,
    queue_depth,
    read_queue,
    start_parser,
    wait_until,
)

StartParser = Callable[..., ParserProcess]
REJECTED = {"type": "es_rejected_execution_exception", "reason": "rejected execution: queue full"}


@pytest.fixture
def parsers(
    tmp_path: Path, amqp_url: str, namespace: str, es_url: str, es_index_prefix: str
) -> Iterator[StartParser]:
    started: list[ParserProcess] = []

    def start(*args: str) -> ParserProcess:
        process = start_parser(
            tmp_path, amqp_url=amqp_url, namespace=namespace, es_url=es_url,
            index_prefix=es_index_prefix, args=("--bulk-size", "1000", *args),
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


async def test_an_item_failing_for_ever_is_dead_lettered_after_its_retries(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_outage: EsOutage,
) -> None:
    """One record answered 429 on every try: after ``--item-retry-limit`` retries it is in
    the dead-letter queue with reason es_retry_exhausted, every other record is stored, and
    every message is acked (the flusher is free again)."""
    records = make_records(300)
    stuck = records[123]
    es_outage.fail_items({stuck["id"]}, 429, REJECTED)
    parser = parsers("--item-retry-limit", "4", "--retry-cap", "0.05")
    await parser.wait_ready()
    async with Publisher(amqp_url, namespace) as pub:
        for start in range(0, 300, 100):
            await pub.publish("measurement", records[start:start + 100])

    async def acked() -> bool:
        parser.assert_running()
        return await parser.metric("messages_acked_total") >= 3

    await wait_until(acked, 60, "every message to be acked")
    es_outage.clear_faults()
    (letter,) = await read_queue(amqp_url, Topology(namespace).dead_queue("measurement"), 1)
    headers = letter.header.properties.headers
    assert headers["x-sluice-reason"] == RETRY_EXHAUSTED
    assert "es_rejected_execution_exception" in headers["x-sluice-error"]
    assert msgpack.unpackb(letter.body) == stuck
    hits = await es_fetch_all(f"{es_index_prefix}-measurement-*")
    assert_stored_exactly(hits, [r for r in records if r is not stuck], es_index_prefix)
    metrics = await parser.metrics()
    assert metrics[f'sluice_parser_dead_lettered_total{{reason="{RETRY_EXHAUSTED}"}}'] == 1
    assert metrics['sluice_parser_bulk_retries_total{cause="item"}'] >= 4


async def test_readyz_turns_false_while_nothing_is_indexed_and_back_once_it_is(
    parsers: StartParser, amqp_url: str, namespace: str, es_index_prefix: str,
    es_fetch_all: Any, es_outage: EsOutage,
) -> None:
    """Every item answered 429 while the store answers pings: ``indexing`` turns false
    after ``--stall-timeout`` (``elasticsearch`` stays true); once the store takes the
    items, they are stored exactly once and /readyz is 200 again."""
    parser = parsers("--stall-timeout", "1", "--retry-cap", "0.2")
    await parser.wait_ready()
    es_outage.fail_items(None, 429, REJECTED)
    records = make_records(200)
    async with Publisher(amqp_url, namespace) as pub:
        await pub.publish("measurement", records)

    async def not_ready() -> bool:
        status, text = await parser.get("/readyz")
        return status == 503 and json.loads(text)["checks"] == {
            "broker": True, "elasticsearch": True, "indexing": False,
        }

    await wait_until(not_ready, 30, "/readyz to report the stalled indexer")
    es_outage.clear_faults()
    await parser.wait_ready(30)
    hits = await es_fetch_all(f"{es_index_prefix}-measurement-*")
    assert_stored_exactly(hits, records, es_index_prefix)
    assert await queue_depth(amqp_url, Topology(namespace).dead_queue("measurement")) == 0
