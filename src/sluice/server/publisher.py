"""Batches to AMQP messages, with pipelined publisher confirms.

Each batch becomes one persistent message on ``<ns>.ingest`` with routing key
``raw.<kind>`` and the payload as its body, byte for byte. Publishes are pipelined: every
batch gets its own small task awaiting its confirm, so many confirms are outstanding on
the one channel at once, and each batch is settled (acked or nacked to its connection) as
soon as its own confirm arrives, in whatever order the broker confirms.

Outcomes, as the ``code`` handed to the settle callback (``None`` means confirmed)::

    unroutable   mandatory publish returned: no queue bound for raw.<kind>
    refused      the broker nacked the publish (e.g. a queue rejecting publishes)
    unavailable  no link, or the link was lost before the confirm arrived
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Callable, Optional

import aiormq
from aiormq.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic

from ..amqp import BrokerLink
from ..errors import BrokerUnavailable
from ..lifecycle import TaskOwner
from ..logs import get_logger
from ..protocol import Batch, NackCode
from ..topology import Topology
from .metrics import ServerMetrics

__all__ = ["REFUSED", "UNAVAILABLE", "UNROUTABLE", "Publication", "Publisher", "Settle"]

log = get_logger(__name__)

UNROUTABLE = NackCode.UNROUTABLE
REFUSED = NackCode.REFUSED
UNAVAILABLE = NackCode.UNAVAILABLE

#: settle(seq, code, message): code None = confirmed by RabbitMQ
Settle = Callable[[int, Optional[str], str], None]

CONTENT_TYPE = "application/msgpack"
PERSISTENT = 2
#: AMQP table integers are signed 64-bit; larger protocol uints travel as decimal strings
MAX_TABLE_INT = 2**63 - 1


class _Pending:
    """One batch between publish and settle."""

    __slots__ = ("done", "message_id", "seq", "settle", "started", "task")

    def __init__(self, seq: int, message_id: str, settle: Settle, started: float) -> None:
        self.seq = seq
        self.message_id = message_id
        self.settle = settle
        self.started = started
        self.done = False
        self.task: Optional[asyncio.Task[None]] = None


#: a batch being published, as returned by :meth:`Publisher.publish`
Publication = _Pending


def _table_int(value: int) -> int | str:
    return value if value <= MAX_TABLE_INT else str(value)


class Publisher:
    def __init__(
        self, link: BrokerLink, topology: Topology, server_id: str, metrics: ServerMetrics
    ) -> None:
        self._link = link
        self._exchange = topology.exchange
        self._server_id = server_id
        self._metrics = metrics
        self._tasks = TaskOwner("publisher")
        self._pending: set[_Pending] = set()
        # aiormq matches a returned (unroutable) message to its confirm by message_id, so
        # two publishes with the same id must never be outstanding on the channel at once
        # (the same client_id on two connections, or a resend racing its original).
        self._by_message_id: dict[str, _Pending] = {}

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def publish(self, batch: Batch, client_id: str, settle: Settle) -> Optional[Publication]:
        """Start publishing ``batch``; ``settle`` is called exactly once with the outcome
        (possibly before this returns, when there is no link: then None is returned),
        unless the returned publication is abandoned first (:meth:`abandon`)."""
        loop = asyncio.get_running_loop()
        message_id = f"{client_id}:{batch.seq}"
        pending = _Pending(batch.seq, message_id, settle, loop.time())
        if not self._link.is_up:
            self._finish(pending, UNAVAILABLE, "RabbitMQ is unavailable; resend later")
            return None
        properties = Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=message_id,
            headers={
                "kind": batch.kind,
                "count": _table_int(batch.count),
                "client_id": client_id,
                "seq": _table_int(batch.seq),
                "server_id": self._server_id,
                "received_at": int(time.time() * 1000),
            },
        )
        self._pending.add(pending)
        pending.task = self._tasks.spawn(
            self._publish(pending, batch.payload, f"raw.{batch.kind}", properties)
        )
        return pending

    def abandon(self, publications: Iterable[Publication]) -> None:
        """Stop publishing these (their connection is gone or gave up on them) without
        settling them, so their payloads are not held while the broker is slow or blocked.

        Each task is cancelled. One still waiting for its turn on the channel (behind a
        blocked or slow broker) is dropped before a frame of it is written, which is safe
        in aiormq; one already written will still be confirmed by RabbitMQ, unobserved (at
        least once: nobody was going to be told about it anyway).
        """
        for pending in publications:
            if pending.done:
                continue
            pending.done = True
            self._pending.discard(pending)
            if pending.task is not None:
                pending.task.cancel()

    async def _publish(
        self, pending: _Pending, body: bytes, routing_key: str, properties: Basic.Properties
    ) -> None:
        code: Optional[str] = UNAVAILABLE
        message = "lost the RabbitMQ link before the confirm arrived; resend"
        message_id = pending.message_id
        try:
            earlier = self._by_message_id.get(message_id)
            while earlier is not None and earlier.task is not None:
                await asyncio.wait({earlier.task})
                earlier = self._by_message_id.get(message_id)
            self._by_message_id[message_id] = pending
            channel = self._link.channel
            result = await channel.basic_publish(
                body, exchange=self._exchange, routing_key=routing_key,
                properties=properties, mandatory=True,
            )
            if isinstance(result, Basic.Ack):
                code, message = None, ""
            elif isinstance(result, Basic.Nack):
                code, message = REFUSED, "RabbitMQ refused the batch"
            else:  # a returned message, when the channel does not raise on returns
                code, message = UNROUTABLE, f"no queue is bound for routing key {routing_key}"
        except PublishError:
            code, message = UNROUTABLE, f"no queue is bound for routing key {routing_key}"
        except DeliveryError:
            code, message = REFUSED, "RabbitMQ refused the batch"
        except (BrokerUnavailable, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError,
                OSError) as exc:
            # channel or connection closed underneath, or BrokerUnavailable (a RuntimeError
            # is what aiormq raises for a closed channel)
            message = f"RabbitMQ is unavailable ({type(exc).__name__}); resend later"
        except Exception as exc:
            message = f"RabbitMQ is unavailable ({type(exc).__name__}); resend later"
            log.warning("publish_failed", error=repr(exc))
        finally:
            if self._by_message_id.get(message_id) is pending:
                del self._by_message_id[message_id]
            self._finish(pending, code, message)

    def _finish(self, pending: _Pending, code: Optional[str], message: str) -> None:
        if pending.done:
            return
        pending.done = True
        self._pending.discard(pending)
        self._metrics.confirm_latency.observe(asyncio.get_running_loop().time() - pending.started)
        pending.settle(pending.seq, code, message)

    def link_lost(self, reason: BaseException) -> None:
        """Nack (unavailable) every batch still waiting for a confirm: the lost channel's
        confirms will never come, and the client should resend rather than wait."""
        stranded = list(self._pending)
        if stranded:
            log.warning("publishes_stranded", count=len(stranded), reason=repr(reason))
        for pending in stranded:
            self._finish(pending, UNAVAILABLE, "lost the RabbitMQ link before the confirm arrived; "
                         "resend")
            if pending.task is not None:
                pending.task.cancel()

    async def close(self) -> None:
        """Cancel what is still outstanding; each is settled ``unavailable``."""
        await self._tasks.close()
        for pending in list(self._pending):
            self._finish(pending, UNAVAILABLE, "the server is shutting down; resend")
