"""The server's global budget of in-flight bytes, shared by every connection.

``max_inflight`` bounds batches per connection; this bounds what all connections together
hold: the bodies of batches read and not yet settled (acked, nacked or abandoned). A
connection takes a batch's body length before it reads the body, and gives it back when the
batch settles. While the budget is spent, a connection waits before reading the body, so
the client is held back by TCP exactly as at ``max_inflight``: no error, nothing buffered.

Waiters are served first come, first served, so a stream of small batches cannot starve a
big one. A frame larger than the whole budget is let through when nothing else is in
flight (settings keep the budget at least one ``max_frame``, so that never happens in
practice).
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["ByteBudget"]


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Connections waiting for bytes now."""
        return len(self._waiters)

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.limit or self.used == 0

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if that is possible now without overtaking a waiter."""
        if self._waiters or not self._fits(size):
            return False
        self.used += size
        return True

    async def take(self, size: int) -> None:
        """Take ``size`` bytes, waiting in line until they fit."""
        if self.try_take(size):
            return
        entry = (size, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self.release(size)  # granted, but the taker is gone: give the bytes back
            else:
                self._waiters.remove(entry)
                self._wake()  # the line may have been held up by this waiter
            raise

    def release(self, size: int) -> None:
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():  # cancelled while in line
                self._waiters.popleft()
                continue
            if not self._fits(size):
                return
            self._waiters.popleft()
            self.used += size
            future.set_result(None)
