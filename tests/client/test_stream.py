from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import msgpack
import pytest

from sluice.backoff import Backoff
from sluice.client.batch import OutBatch
from sluice.client.feed import Feed
from sluice.client.report import Stats, Summary
from sluice.client.sources import MeasurementGenerator
from sluice.client.stream import Stream, session_client_id

from .fakes import FakeServer, Received


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    yield fake
    await fake.close()


@pytest.fixture
async def background() -> AsyncIterator[list[asyncio.Future[None]]]:
    """Stream tasks a test runs in the background: cancelled when it ends, so a failing test
    leaves no stream reconnecting to a closed server (requested after ``server``, so torn
    down before it)."""
    started: list[asyncio.Future[None]] = []
    yield started
    for task in started:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _stream_all(server: FakeServer, batches: list[OutBatch], *, connections: int = 1,
                      max_tries: int = 5, give_up_after: float = 600.0, ping_interval: float = 5.0,
                      timeout: float = 60) -> tuple[Stats, list[Stream]]:
    port = await server.start()
    stats = Stats()
    feed = Feed(4)
    streams = [
        Stream(i, "127.0.0.1", port, f"test-{i}", feed, stats, max_tries=max_tries,
               give_up_after=give_up_after, backoff=Backoff(base=0.001, cap=0.01),
               ping_interval=ping_interval)
        for i in range(connections)
    ]
    tasks = [asyncio.ensure_future(s.run()) for s in streams]

    async def put_all() -> None:
        for batch in batches:
            stats.produced += batch.count
            await feed.put(batch)
        feed.close()

    await asyncio.wait_for(asyncio.gather(put_all(), *tasks), timeout)
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
    assert stats.latency.count == 40
    # every connection says hello with its own client id: the stream's, plus its session
    assert {b.client_id for b in server.acked} <= {"test-0.1", "test-1.1", "test-2.1"}
    assert len({b.client_id for b in server.acked}) == 3


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
    groups = _by_connection(server)
    assert sorted(groups) == [0, 1, 2]
    for conn_batches in groups.values():
        seqs = [b.seq for b in conn_batches]
        assert len(seqs) == len(set(seqs))
    # ... which says hello with a new client id, so <client_id>:<seq> (the AMQP message_id)
    # never names two sends
    assert len({conn[0].client_id for conn in groups.values()}) == 3
    message_ids = server.message_ids()
    assert len(message_ids) == len(set(message_ids))


def _by_connection(server: FakeServer) -> dict[int, list[Received]]:
    out: dict[int, list[Received]] = {}
    for b in server.seen:
        out.setdefault(b.connection, []).append(b)
    return out


def test_session_client_id_stays_within_128_bytes() -> None:
    assert session_client_id("host-1-ab12cd-0", 7) == "host-1-ab12cd-0.7"
    long_id = session_client_id("é" * 200, 123)
    assert len(long_id.encode("utf-8")) <= 128
    assert long_id.endswith(".123")
    long_id.encode("utf-8").decode("utf-8")  # cut on a character boundary


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


async def test_batches_refused_max_tries_times_are_given_up(server: FakeServer) -> None:
    server.nack_first = 10**6
    server.nack_code = "a_code_from_the_future"  # unknown: its cause may be lasting
    stats, _ = await _stream_all(server, _batches(2, 10), max_tries=3)
    assert stats.acked == 0
    assert stats.gave_up == 20
    assert stats.nacked == 60  # each batch nacked on each of its 3 tries
    assert all(len(r.payload) for r in server.seen)
    assert len(server.seen) == 6


async def test_unroutable_batches_fail_fast_whatever_max_tries(server: FakeServer) -> None:
    server.nack_first = 10**6
    server.nack_code = "unroutable"
    stats, _ = await _stream_all(server, _batches(2, 10), max_tries=20)
    assert (stats.acked, stats.gave_up) == (0, 20)
    assert len(server.seen) == 6  # 3 tries each, not 20


async def test_unavailable_nacks_do_not_use_up_max_tries(server: FakeServer) -> None:
    # RabbitMQ restarting: the server nacks `unavailable` for longer than max_tries allows
    server.nack_first = 12
    batches = _batches(3, 10)
    stats, _ = await _stream_all(server, batches, max_tries=2)
    assert (stats.acked, stats.gave_up) == (30, 0)
    assert stats.nacked >= 120
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))


async def test_refused_nacks_back_off_and_resend_without_using_up_max_tries(
    server: FakeServer,
) -> None:
    # a queue at x-max-length-bytes rejects publishes until the parsers drain it
    server.nack_first = 12
    server.nack_code = "refused"
    batches = _batches(3, 10)
    stats, _ = await _stream_all(server, batches, max_tries=2)
    assert (stats.acked, stats.gave_up) == (30, 0)
    assert stats.nacked >= 120
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))


async def test_a_refused_hello_is_retried(server: FakeServer) -> None:
    server.refuse_first = 2
    stats, _ = await _stream_all(server, _batches(3, 5))
    assert stats.acked == 15
    assert server.connections == 3


async def test_refused_connections_do_not_use_up_max_tries(server: FakeServer) -> None:
    # a server restarting behind the balancer: many failed attempts in a row, then it is back
    server.refuse_first = 25
    stats, streams = await _stream_all(server, _batches(3, 5), max_tries=3)
    assert (stats.acked, stats.gave_up) == (15, 0)
    assert not streams[0].gave_up
    assert server.connections == 26


async def test_an_unreachable_server_is_given_up_after_give_up_after() -> None:
    fake = FakeServer()
    port = await fake.start()
    await fake.close()  # nothing listens there any more
    stats = Stats()
    feed = Feed(4)
    stream = Stream(0, "127.0.0.1", port, "t", feed, stats, max_tries=1, give_up_after=0.3,
                    backoff=Backoff(base=0.001, cap=0.01))
    started = time.monotonic()
    await asyncio.wait_for(stream.run(), 30)
    assert stream.gave_up
    assert time.monotonic() - started >= 0.3
    assert stats.reconnects > 1  # attempts are not limited by max_tries, only by time


async def test_give_up_all_gives_up_exactly_what_the_server_did_not_ack(server: FakeServer) -> None:
    # The server acks 3 batches, then vanishes (flushing those acks first) while the stream
    # holds more in flight; reconnecting fails until give_up_after.
    server.vanish_after = 3
    port = await server.start()
    stats = Stats()
    feed = Feed(100)
    batches = _batches(20, 10)
    for batch in batches:
        stats.produced += batch.count
        await feed.put(batch)
    feed.close()
    stream = Stream(0, "127.0.0.1", port, "t", feed, stats, max_tries=5, give_up_after=0.3,
                    backoff=Backoff(base=0.001, cap=0.01))
    await asyncio.wait_for(stream.run(), 30)
    assert stream.gave_up
    acked_ids = [r["id"] for r in server.acked_records()]
    assert stats.acked == len(acked_ids) == 30
    held_back = [r["id"] for b in feed.drain() for r in msgpack.unpackb(b.payload, raw=False)]
    assert stats.gave_up == stats.sent - stats.acked > 0
    assert stats.gave_up + stats.acked + len(held_back) == 200
    # what was given up is every sent record the server did not ack: nothing acked, nothing lost
    assert not set(acked_ids) & set(held_back)
    assert stats.inflight == 0
    assert stream.held() == 0


async def test_a_silent_server_ends_the_session_and_batches_are_resent(server: FakeServer) -> None:
    # The first connection gets a welcome, then nothing: no ack, no pong.
    server.silent_first = 1
    batches = _batches(5, 10)
    # A silence timeout (3 ping intervals) well above the stalls of a loaded machine: the
    # second connection, which answers, must not be taken for silent too.
    stats, _ = await _stream_all(server, batches, ping_interval=0.3, timeout=30)
    assert server.connections == 2
    groups = _by_connection(server)
    assert [b.payload for b in groups[1]] == [b.payload for b in groups[0]]  # same bytes, same order
    assert sorted(r["id"] for r in server.acked_records()) == sorted(_ids(batches))
    assert (stats.acked, stats.resent) == (50, 50)


async def test_a_silent_idle_server_is_noticed_by_its_unanswered_ping(
    server: FakeServer, background: list[asyncio.Future[None]]
) -> None:
    server.silent_first = 1
    port = await server.start()
    stats = Stats()
    feed = Feed(4)
    stream = Stream(0, "127.0.0.1", port, "idle", feed, stats, max_tries=3, ping_interval=0.02,
                    backoff=Backoff(base=0.001, cap=0.01))
    task = asyncio.ensure_future(stream.run())
    background.append(task)
    for _ in range(5000):
        if server.connections >= 2:
            break
        await asyncio.sleep(0.002)
    assert server.connections >= 2
    stats.produced += 5
    await feed.put(_batches(1, 5)[0])
    feed.close()
    await asyncio.wait_for(task, 10)
    assert stats.acked == 5


async def test_a_server_holding_acks_but_answering_pings_is_not_given_up(
    server: FakeServer, background: list[asyncio.Future[None]]
) -> None:
    # RabbitMQ slow to confirm: no acks for many silence timeouts, but pongs come back, so
    # the connection stays; the stream leaves one of the server's slots free for the pings.
    server.hold_acks = True
    server.max_inflight = 8
    port = await server.start()
    stats = Stats()
    feed = Feed(100)
    batches = _batches(20, 5)
    for batch in batches:
        stats.produced += batch.count
        await feed.put(batch)
    feed.close()
    # The silence timeout (3 ping intervals, 0.75 s) is well above a loaded machine's stalls.
    stream = Stream(0, "127.0.0.1", port, "slow", feed, stats, max_tries=3, ping_interval=0.25,
                    backoff=Backoff(base=0.001, cap=0.01))
    task = asyncio.ensure_future(stream.run())
    background.append(task)
    # Pings are at least ping_interval apart: 12 of them span over 3 silence timeouts, however
    # slow the machine.
    for _ in range(30_000):
        if server.pings >= 12 and len(server.seen) >= 7:
            break
        await asyncio.sleep(0.001)
    assert server.connections == 1
    assert len(server.seen) == 7  # max_inflight - 1
    assert server.pings > 5
    server.release()
    await asyncio.wait_for(task, 10)
    assert (stats.acked, stats.resent, server.connections) == (100, 0, 1)
    assert Counter(b.payload for b in server.acked) == Counter(b.payload for b in batches)


async def test_a_quiet_connection_is_kept_alive_with_pings(
    server: FakeServer, background: list[asyncio.Future[None]]
) -> None:
    port = await server.start()
    stats = Stats()
    feed = Feed(4)
    stream = Stream(0, "127.0.0.1", port, "quiet", feed, stats, max_tries=3, ping_interval=0.02)
    task = asyncio.ensure_future(stream.run())
    background.append(task)
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
