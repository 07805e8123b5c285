"""The hand-off between one source and the client's streams: a bounded queue of batches.

Bounded so that a fast source waits for the network instead of piling up memory. A batch
is handed straight to the stream that has waited longest, so batches spread evenly over
the connections (and so over the servers behind a balancer), instead of going to
whichever stream happens to come back to the queue first while others sit idle.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .batch import OutBatch

__all__ = ["Feed"]


class Feed:
    def __init__(self, maxsize: int) -> None:
        self._items: deque[OutBatch] = deque()
        self._waiters: deque[asyncio.Future[OutBatch | None]] = deque()
        # Taken by put, given back when a get returns the batch: the bound on batches held.
        self._room = asyncio.Semaphore(maxsize)
        self.closed = False

    async def put(self, batch: OutBatch) -> None:
        if self.closed:
            raise RuntimeError("feed is closed")
        await self._room.acquire()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(batch)
                return
        self._items.append(batch)

    def close(self) -> None:
        """No more batches: streams get None once the queued ones are taken."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> OutBatch | None:
        """The next batch, or None once the feed is closed and empty."""
        if self._items:
            self._room.release()
            return self._items.popleft()
        if self.closed:
            return None
        waiter: asyncio.Future[OutBatch | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            batch = await waiter
        except asyncio.CancelledError:
            # Cancelled after being handed a batch: give it back, first in line.
            if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                handed = waiter.result()
                assert handed is not None
                self._items.appendleft(handed)
            raise
        if batch is not None:
            self._room.release()
        return batch

    def drain(self) -> list[OutBatch]:
        """Take every batch still queued (used when no stream is left to send them)."""
        out = list(self._items)
        self._items.clear()
        for _ in out:
            self._room.release()
        return out

    def __len__(self) -> int:
        return len(self._items)
