from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgpack
import pytest

from sluice.backoff import Backoff
from sluice.client.batch import OutBatch
from sluice.client.feed import Feed
from sluice.client.report import Stats, Summary
from sluice.client.sources import MeasurementGenerator
from sluice.client.stream import Stream

from .fakes import FakeServer


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    yield fake
    await fake.close()


async def _stream_all(server: FakeServer, batches: list[OutBatch], *, connections: int = 1,
                      max_tries: int = 5) -> tuple[Stats, list[Stream]]:
    port = await server.start()
    stats = Stats()
    feed = Feed(4)
    streams = [
        Stream(i, "127.0.0.1", port, f"test-{i}", feed, stats, max_tries=max_tries,
               backoff=Backoff(base=0.001, cap=0.01))
        for i in range(connections)
    ]
    tasks = [asyncio.ensure_future(s.run()) for s in streams]
    for batch in batches:
        stats.produced += batch.count
        await feed.put(batch)
    feed.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return stats, streams


def _batches(n: int, size: int, seed: int = 1) -> list[OutBatch]:
    gen = MeasurementGenerator(seed, "stream-test", 10)
    return [OutBatch("measurement", size, gen.payload(size, 1_700_000_000_000)) for _ in range(n)]


def _ids(batches: list[OutBatch]) -> list[str]:
    return [r["id"] for b in batches for r in msgpack.unpackb(b.payload, raw=False)]


async def test_everything_is_acked_exactly_once_over_several_connections(server: FakeServer) -> None:
    batches = _batches(40, 25)
    stats, _ = await _stream_all(server, batches, connections=3)
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))
    assert (stats.sent, stats.acked, stats.resent, stats.nacked, stats.inflight) == (1000, 1000, 0, 0, 0)
    assert server.connections == 3
    assert len(stats.latencies) == 40
    # every connection says hello with its own client id
    assert {b.client_id for b in server.acked} <= {"test-0", "test-1", "test-2"}


async def test_nacked_batches_are_resent_with_the_same_bytes(server: FakeServer) -> None:
    server.nack_first = 3
    batches = _batches(10, 20)
    stats, _ = await _stream_all(server, batches)
    nacked = server.seen[:3]
    acked_payloads = [b.payload for b in server.acked]
    for batch in nacked:
        assert batch.payload in acked_payloads
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))
    assert stats.nacked == 60
    assert stats.resent == 60
    assert stats.acked == 200
    assert server.connections >= 2  # a nack makes the stream reconnect


async def test_a_dropped_connection_resends_every_unacked_batch(server: FakeServer) -> None:
    server.drop_after = [3, 5]
    batches = _batches(30, 10)
    stats, _ = await _stream_all(server, batches)
    acked_ids = [r["id"] for r in server.acked_records()]
    assert set(acked_ids) == set(_ids(batches))
    # at least once: anything acked before the drop was not acked twice by the client
    assert stats.acked == 300
    assert stats.resent > 0
    assert server.connections == 3
    # seq is per connection: a resend may reuse a number, but on a new connection
    for conn_batches in _by_connection(server):
        seqs = [b.seq for b in conn_batches]
        assert len(seqs) == len(set(seqs))


def _by_connection(server: FakeServer) -> list[list]:
    out: list[list] = [[]]
    last = 0
    for b in server.seen:
        if b.seq <= last:
            out.append([])
        out[-1].append(b)
        last = b.seq
    return out


async def test_a_batch_larger_than_max_frame_is_split(server: FakeServer) -> None:
    server.max_frame = 2000
    batches = _batches(3, 100)  # ~13 kB each
    stats, _ = await _stream_all(server, batches)
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))
    assert all(len(b.payload) < 2000 for b in server.acked)
    assert len(server.acked) > 3
    assert stats.acked == 300
    assert stats.gave_up == 0


async def test_a_single_record_over_max_frame_fails(server: FakeServer) -> None:
    server.max_frame = 100
    stats, _ = await _stream_all(server, _batches(1, 2))
    assert stats.acked == 0
    assert stats.gave_up == 2
    summary = Summary.of(stats, "x", 1, None)
    assert summary.failed == 2


async def test_batches_are_given_up_after_max_tries(server: FakeServer) -> None:
    server.nack_first = 10**6
    stats, _ = await _stream_all(server, _batches(2, 10), max_tries=3)
    assert stats.acked == 0
    assert stats.gave_up == 20
    assert stats.nacked == 60  # each batch nacked on each of its 3 tries
    assert all(len(r.payload) for r in server.seen)
    assert len(server.seen) == 6


async def test_a_refused_hello_is_retried(server: FakeServer) -> None:
    server.refuse_first = 2
    stats, _ = await _stream_all(server, _batches(3, 5))
    assert stats.acked == 15
    assert server.connections == 3


async def test_an_unreachable_server_is_given_up_after_max_tries() -> None:
    fake = FakeServer()
    port = await fake.start()
    await fake.close()  # nothing listens there any more
    stats = Stats()
    feed = Feed(4)
    stream = Stream(0, "127.0.0.1", port, "t", feed, stats, max_tries=3,
                    backoff=Backoff(base=0.001, cap=0.01))
    await asyncio.wait_for(stream.run(), 30)
    assert stream.gave_up
    assert stats.reconnects == 2


async def test_a_quiet_connection_is_kept_alive_with_pings(server: FakeServer) -> None:
    port = await server.start()
    stats = Stats()
    feed = Feed(4)
    stream = Stream(0, "127.0.0.1", port, "quiet", feed, stats, max_tries=3, ping_interval=0.02)
    task = asyncio.ensure_future(stream.run())
    for _ in range(10_000):
        if server.pings >= 3:
            break
        await asyncio.sleep(0.001)
    batch = _batches(1, 5)[0]
    stats.produced += 5
    await feed.put(batch)
    feed.close()
    await asyncio.wait_for(task, 30)
    assert server.pings >= 3
    assert stats.acked == 5
