"""A RabbitMQ link that keeps itself up.

:class:`BrokerLink` connects with aiormq, opens one channel, runs the caller's ``setup``
(topology declarations, ``basic_qos``, consumers), and when the connection or channel
breaks it tells ``on_lost`` and reconnects with exponential backoff and full jitter.
While it is down, :attr:`channel` raises :class:`BrokerUnavailable`.

A link may be given several URLs, one per node of a RabbitMQ cluster. Each attempt takes
the next URL in turn, so a lost node is a reconnect to another one, not an outage; only a
whole round of failed URLs waits out a backoff delay. Every link starts at a random place
in the list, so that many replicas spread their connections over the nodes. A quorum
queue is reachable through any node of its cluster, so it does not matter which node a
link lands on, and a queue leader moving to another node is at most one such reconnect.

A link whose owner consumes (``consume``) also opens a lean consuming connection
(:mod:`sluice.amqpconsumer`) to the same node, after ``setup``, and hands its channel to
``consume``. The two connections are one link: either one closing ends both, so a
consumer never outlives the channel its dead letters are published on.

A :class:`ConfigError` from ``setup`` (a queue declared with other arguments) is not
retried: reconnecting cannot fix it. The link stops, keeps the error in :attr:`failure`
and sets :attr:`failed`, and the service exits with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Optional

import aiormq

from . import amqpconsumer
from .amqpconsumer import ConsumerChannel, ConsumerConnection
from .backoff import Backoff
from .errors import BrokerUnavailable, ConfigError
from .lifecycle import TaskOwner
from .logs import get_logger
from .settings import mask_url, split_urls

__all__ = ["BrokerLink"]

log = get_logger(__name__)

#: seconds a link must stay up before a later loss starts backing off from scratch
STABLE_AFTER = 5.0
#: seconds one connection attempt may take: a node that is down on another host may not
#: refuse, and the link must move on to the next node rather than hang
CONNECT_TIMEOUT = 15.0

Setup = Callable[[aiormq.abc.AbstractChannel], Awaitable[None]]
OnLost = Callable[[BaseException], None]
Consume = Callable[[ConsumerChannel], Awaitable[None]]


class BrokerLink:
    def __init__(
        self,
        url: str | Sequence[str],
        *,
        setup: Setup | None = None,
        on_lost: OnLost | None = None,
        consume: Consume | None = None,
        publisher_confirms: bool = True,
        backoff: Backoff | None = None,
        name: str = "broker",
    ) -> None:
        self._urls = split_urls(url) if isinstance(url, str) else tuple(url)
        if not self._urls:
            raise ConfigError("a broker link needs at least one RabbitMQ URL")
        self._next = random.randrange(len(self._urls))
        self._setup = setup
        self._on_lost = on_lost
        self._consume = consume
        self._confirms = publisher_confirms
        self._backoff = backoff or Backoff(base=0.2, cap=10.0)
        self._name = name
        self._connection: Optional[aiormq.abc.AbstractConnection] = None
        self._channel: Optional[aiormq.abc.AbstractChannel] = None
        self._consumer: Optional[ConsumerConnection] = None
        self._consumer_channel: Optional[ConsumerChannel] = None
        self._up = asyncio.Event()
        #: set when setup failed in a way no reconnect can fix; the error is in ``failure``
        self.failed = asyncio.Event()
        self.failure: Optional[ConfigError] = None
        self._tasks = TaskOwner(f"{name}-link")
        #: public: how many times this link has come up. The one outside view of how often a
        #: link that a service owns (and sets up itself) has reconnected.
        self.connects = 0
        #: the URL of the node this link is (or was last) connected to
        self.url: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        return self._urls

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    @property
    def channel(self) -> aiormq.abc.AbstractChannel:
        if not self._up.is_set() or self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("no link to RabbitMQ")
        return self._channel

    @property
    def consumer_channel(self) -> ConsumerChannel:
        """The channel of the consuming connection (a link made with ``consume``)."""
        channel = self._consumer_channel
        if not self._up.is_set() or channel is None or channel.is_closed:
            raise BrokerUnavailable("no link to RabbitMQ")
        return channel

    def start(self) -> None:
        self._tasks.spawn(self._run(), name=f"{self._name}-link")

    def _take_url(self) -> str:
        url = self._urls[self._next]
        self._next = (self._next + 1) % len(self._urls)
        return url

    async def _connect(self, url: str) -> None:
        connection = await asyncio.wait_for(aiormq.connect(url), CONNECT_TIMEOUT)
        consumer: Optional[ConsumerConnection] = None
        try:
            channel = await connection.channel(publisher_confirms=self._confirms)
            if self._setup is not None:
                await self._setup(channel)
            if self._consume is not None:
                consumer = await asyncio.wait_for(amqpconsumer.connect(url), CONNECT_TIMEOUT)
                self._consumer_channel = await consumer.channel()
                await self._consume(self._consumer_channel)
        except BaseException:
            self._consumer_channel = None
            if consumer is not None:
                await consumer.close()
            await connection.close()
            raise
        self._connection, self._channel, self._consumer = connection, channel, consumer
        self.url = url

    def _closings(self) -> list[asyncio.Future[Any]]:
        things: list[Any] = [self._connection, self._channel, self._consumer,
                             self._consumer_channel if self._consumer is not None else None]
        return [thing.closing for thing in things if thing is not None]

    async def _run(self) -> None:
        failed = 0
        while True:
            url = self._take_url()
            try:
                await self._connect(url)
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:
                log.error("broker_setup_refused", link=self._name, url=mask_url(url),
                          error=str(exc))
                self.failure = exc
                self.failed.set()
                return
            except Exception as exc:
                failed += 1
                # The next node may well be up: only a whole round of failures backs off.
                delay = self._backoff.next_delay() if failed % len(self._urls) == 0 else 0.0
                log.warning("broker_connect_failed", link=self._name, url=mask_url(url),
                            error=repr(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            failed = 0
            self.connects += 1
            up_since = time.monotonic()
            self._up.set()
            log.info("broker_connected", link=self._name, url=mask_url(url))
            assert self._connection is not None and self._channel is not None
            # Whichever closes first, a connection or a channel, ends this link.
            # asyncio.wait never cancels what it waits on: the connections own these futures.
            await asyncio.wait(self._closings(), return_when=asyncio.FIRST_COMPLETED)
            reason = self._close_reason()
            self._up.clear()
            # Only a link that stayed up a while resets the backoff: a channel that the
            # broker closes right after setup must not turn into a reconnect storm.
            if time.monotonic() - up_since >= STABLE_AFTER:
                self._backoff.reset()
            log.warning("broker_link_lost", link=self._name, url=mask_url(url), error=repr(reason))
            self._notify_lost(reason)
            await self._drop()
            await asyncio.sleep(self._backoff.next_delay())

    def _notify_lost(self, reason: BaseException) -> None:
        # The owner's callback must not be able to end the reconnect loop.
        if self._on_lost is None:
            return
        try:
            self._on_lost(reason)
        except Exception as exc:
            log.error("broker_on_lost_failed", link=self._name, error=repr(exc), exc_info=exc)

    def _close_reason(self) -> BaseException:
        for fut in self._closings():
            if fut.done() and not fut.cancelled():
                exc: BaseException | None = fut.exception()
                if exc is not None:
                    return exc
        return BrokerUnavailable("link closed")

    async def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        consumer, self._consumer, self._consumer_channel = self._consumer, None, None
        if consumer is not None:
            # Closed first: its unacked deliveries go back to the queue at once.
            with contextlib.suppress(Exception):
                await consumer.close()
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def close(self) -> None:
        await self._tasks.close()
        was_up = self._up.is_set()
        self._up.clear()
        if was_up:
            self._notify_lost(BrokerUnavailable("link closed by its owner"))
        await self._drop()
