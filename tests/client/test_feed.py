from __future__ import annotations

import asyncio

from sluice.client.batch import OutBatch
from sluice.client.feed import Feed


def _batch(n: int) -> OutBatch:
    return OutBatch("measurement", n, b"\x90")


async def test_batches_go_to_the_longest_waiting_stream() -> None:
    feed = Feed(10)
    getters = [asyncio.ensure_future(feed.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for n in range(1, 4):
        await feed.put(_batch(n))
    got = await asyncio.gather(*getters)
    assert [b.count for b in got if b is not None] == [1, 2, 3]


async def test_close_ends_every_getter_after_the_queued_batches() -> None:
    feed = Feed(10)
    await feed.put(_batch(1))
    feed.close()
    first = await feed.get()
    assert first is not None and first.count == 1
    assert await feed.get() is None
    assert await feed.get() is None


async def test_put_waits_for_room() -> None:
    feed = Feed(2)
    await feed.put(_batch(1))
    await feed.put(_batch(2))
    third = asyncio.ensure_future(feed.put(_batch(3)))
    await asyncio.sleep(0.01)
    assert not third.done()
    await feed.get()
    await asyncio.wait_for(third, 5)
    assert len(feed) == 2


async def test_a_getter_cancelled_after_the_handoff_gives_the_batch_back() -> None:
    feed = Feed(10)
    getter = asyncio.ensure_future(feed.get())
    await asyncio.sleep(0)
    await feed.put(_batch(7))  # handed to the getter, which has not run yet
    getter.cancel()
    await asyncio.gather(getter, return_exceptions=True)
    again = await feed.get()
    assert again is not None and again.count == 7


async def test_drain_returns_what_is_left() -> None:
    feed = Feed(10)
    for n in range(3):
        await feed.put(_batch(n + 1))
    assert [b.count for b in feed.drain()] == [1, 2, 3]
    assert len(feed) == 0
