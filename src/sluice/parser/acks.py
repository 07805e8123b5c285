"""Acknowledging many deliveries with one ``basic.ack multiple=true``.

An ack with ``multiple`` settles every unacked delivery of the channel up to its tag, so
it may be sent for tag T only once every delivery up to T that this process holds is
finished: indexed and its dead letters confirmed (acked), or given back (nacked). Bulks
finish out of order (several are in flight), so this keeps, per channel, the tags in
the order they arrived and the ones finished, and says how far the ack may reach.

A delivery the worker did not take (it arrived while stopping) is never registered: it
came after every registered one, so no ack can reach it, and it returns to the queue
when the channel closes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Optional

__all__ = ["ChannelAcks"]


class ChannelAcks:
    """The deliveries of one channel, from arrival until an ack covers them."""

    __slots__ = ("_finished", "_held", "sending")

    def __init__(self) -> None:
        #: held while an ack is computed and sent: acks must leave in growing tag order
        #: (one for a lower tag after a ``multiple`` one above it is a channel error)
        self.sending = asyncio.Lock()
        self._held: deque[int] = deque()
        #: finished tags not yet covered -> the kind to count as acked, or None (nacked)
        self._finished: dict[int, Optional[str]] = {}

    def __len__(self) -> int:
        """Deliveries held: received and not yet covered by an ack."""
        return len(self._held)

    def received(self, tag: int) -> None:
        """A delivery arrived (tags grow with arrival on a channel)."""
        self._held.append(tag)

    def finished(self, tag: int, kind: Optional[str]) -> None:
        """The delivery ``tag`` may be acked (``kind``: counted as acked for that kind),
        or was nacked on its own (``kind`` None): either way it no longer holds the
        ack back."""
        self._finished[tag] = kind

    def advance(self) -> tuple[Optional[int], dict[str, int]]:
        """The tag to ack with ``multiple=true`` (None: nothing to ack yet) and the count
        per kind of the deliveries that ack settles.

        The tags it covers are forgotten, so the caller must send that ack now.
        """
        held, finished = self._held, self._finished
        last: Optional[int] = None
        acked: dict[str, int] = {}
        while held and held[0] in finished:
            tag = held.popleft()
            kind = finished.pop(tag)
            if kind is not None:
                acked[kind] = acked.get(kind, 0) + 1
                last = tag
        return last, acked
