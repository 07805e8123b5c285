"""Queue depths and consumer counts, read from RabbitMQ with passive declares.

A passive ``queue.declare`` answers with the queue's ready-message and consumer counts
without creating or changing anything, and needs no management plugin. A queue that does
not exist closes the channel (404), so each look-up gets a fresh channel on one shared
connection, which is opened lazily and reopened after it breaks. Given the URLs of a
cluster's nodes, a connect tries them in turn, starting after the node that failed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import aiormq

from ..logs import RateLimitedLog, get_logger
from ..settings import mask_url, split_urls

__all__ = ["QueueInspector", "QueueState"]

log = get_logger(__name__)


@dataclass(frozen=True)
class QueueState:
    queue: str
    exists: bool
    messages: Optional[int]
    consumers: Optional[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "exists": self.exists,
            "messages": self.messages,
            "consumers": self.consumers,
        }


class QueueInspector:
    """Reads queue states; ``up`` and ``error`` describe the last attempt."""

    def __init__(self, url: str, *, timeout: float = 3.0, retry_after: float = 2.0) -> None:
        self._urls = split_urls(url)
        self._next = 0
        self._timeout = timeout
        self._retry_after = retry_after
        self._connection: Optional[aiormq.abc.AbstractConnection] = None
        self._lock = asyncio.Lock()
        self._failed_at = -float("inf")
        self._warn = RateLimitedLog(log, interval=30.0)
        self.error: Optional[str] = None

    async def _connect(self) -> aiormq.abc.AbstractConnection:
        async with self._lock:
            conn = self._connection
            if conn is not None and not conn.is_closed:
                return conn
            # While the broker is down every request would otherwise wait out a connect
            # timeout; answer from the last failure for a moment instead.
            if time.monotonic() - self._failed_at < self._retry_after and self.error:
                raise ConnectionError(self.error)
            failure: Optional[Exception] = None
            for _ in self._urls:
                url = self._urls[self._next]
                try:
                    conn = await asyncio.wait_for(aiormq.connect(url), self._timeout)
                except Exception as exc:
                    self._next = (self._next + 1) % len(self._urls)
                    failure = exc
                    self._warn.warning("connect", "broker_unreachable", url=mask_url(url),
                                       error=repr(exc))
                    continue
                self._connection = conn
                self.error = None
                return conn
            self._failed_at = time.monotonic()
            self.error = f"cannot connect to RabbitMQ: {type(failure).__name__}"
            raise ConnectionError(self.error) from failure

    async def _one(self, conn: aiormq.abc.AbstractConnection, queue: str) -> QueueState:
        channel = await asyncio.wait_for(conn.channel(), self._timeout)
        try:
            ok = await asyncio.wait_for(channel.queue_declare(queue, passive=True), self._timeout)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return QueueState(queue, False, None, None)
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return QueueState(queue, True, int(ok.message_count or 0), int(ok.consumer_count or 0))

    async def states(self, queues: Sequence[str]) -> Optional[list[QueueState]]:
        """The state of every queue, or ``None`` when RabbitMQ cannot be asked (see ``error``)."""
        try:
            conn = await self._connect()
            return list(await asyncio.gather(*(self._one(conn, q) for q in queues)))
        except ConnectionError:
            return None
        except (asyncio.TimeoutError, aiormq.exceptions.AMQPError, OSError) as exc:
            self.error = f"RabbitMQ did not answer: {type(exc).__name__}"
            self._warn.warning("query", "broker_query_failed", error=repr(exc))
            await self._drop()
            return None

    async def _drop(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._timeout)

    async def close(self) -> None:
        await self._drop()
