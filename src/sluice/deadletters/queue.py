"""Reading and replaying a dead-letter queue ``<ns>.dead.<kind>``.

A quorum queue cannot be browsed: a message is either taken or given back, and in
RabbitMQ before 4.3 every give-back counts as a delivery, so browsing a queue with a
delivery limit (4.x gives quorum queues one by default) would in time drop what it holds.
This module therefore never gives a message back. Each message it looks at is either

- *kept*: published again, unchanged, to the tail of the same queue (``<ns>.dead``,
  ``dead.<kind>``), and acked once RabbitMQ confirmed the copy; or
- *replayed*: its record published to the ingest exchange (``<ns>.ingest``,
  ``raw.<kind>``) and acked once RabbitMQ confirmed that.

Only when a copy cannot be published either is the message nacked back (requeue). A
crash between a confirm and its ack leaves the message twice (in the queue twice, or in
the queue and replayed); never lost. A replayed record keeps its ``id``, so the parser's
``create`` answers 409 for one that was stored meanwhile: a replay never doubles a record.

A walk looks at most at the messages that were in the queue when it started, so letters
that arrive meanwhile, and the copies it keeps, are not seen twice. A walk over the whole
queue leaves it in its original order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import aiormq
import msgpack
from aiormq.abc import AbstractChannel, DeliveredMessage

from ..errors import BrokerUnavailable, PublishRejected
from ..topology import Topology

__all__ = ["DeadLetterQueue", "Letter", "ReplayReport"]

#: ``client_id`` header of replayed messages (the server's is the client's id)
REPLAY_CLIENT_ID = "sluice-deadletters"
_BROKER_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError)


@dataclass
class Letter:
    """One dead-lettered message, decoded for people and for replay."""

    kind: str
    reason: str
    error: str
    #: ``x-sluice-source-message-id``: the raw message the record came in
    source_message_id: Optional[str]
    #: ``x-sluice-parser``: the parser instance that dead-lettered it
    parser: Optional[str]
    dead_lettered_at: Optional[str]
    #: the records it carries: one for a refused record, all of a batch that RabbitMQ
    #: dead-lettered itself (delivery limit); None when the body is not records (poison)
    records: Optional[list[Any]]
    body: bytes = field(repr=False)

    @classmethod
    def parse(cls, kind: str, message: DeliveredMessage) -> Letter:
        props = message.header.properties
        headers: Mapping[str, Any] = props.headers or {}
        reason = _text(headers.get("x-sluice-reason"))
        if not reason:
            # Dead-lettered by RabbitMQ (delivery limit, rejected, expired), not a parser.
            first = _text(headers.get("x-first-death-reason")) or "unknown"
            reason = f"rabbitmq_{first}"
        at = props.timestamp
        return cls(
            kind=kind,
            reason=reason,
            error=_text(headers.get("x-sluice-error")),
            source_message_id=_text(headers.get("x-sluice-source-message-id"))
            or props.message_id or None,
            parser=_text(headers.get("x-sluice-parser")) or None,
            dead_lettered_at=at.astimezone(dt.timezone.utc).isoformat()
            if isinstance(at, dt.datetime) else None,
            records=_records(props.content_type, message.body),
            body=message.body,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "reason": self.reason, "error": self.error,
            "source_message_id": self.source_message_id, "parser": self.parser,
            "dead_lettered_at": self.dead_lettered_at, "records": self.records,
        }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _records(content_type: Optional[str], body: bytes) -> Optional[list[Any]]:
    if content_type not in (None, "", "application/msgpack"):
        return None  # poison bodies are application/octet-stream, unreadable ones text/plain
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        return None
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    return None


@dataclass
class ReplayReport:
    replayed_letters: int = 0
    replayed_records: int = 0
    kept: int = 0
    #: letters whose body is not records (poison): never replayed
    not_replayable: int = 0
    failed: int = 0
    error: str = ""


Visit = Callable[[Letter], Awaitable[bool]]


class DeadLetterQueue:
    """The dead-letter queues of one namespace, over a connection of its own."""

    def __init__(self, amqp_url: str, topology: Topology) -> None:
        self._url = amqp_url
        self.topology = topology
        self._connection: Optional[aiormq.abc.AbstractConnection] = None
        self._channel: Optional[AbstractChannel] = None

    async def __aenter__(self) -> DeadLetterQueue:
        try:
            self._connection = await aiormq.connect(self._url)
            self._channel = await self._connection.channel(publisher_confirms=True)
        except _BROKER_ERRORS as exc:
            await self.close()
            raise BrokerUnavailable(f"cannot reach RabbitMQ: {exc!r}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = self._channel = None

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            raise BrokerUnavailable("the RabbitMQ channel is closed")
        return self._channel

    async def depth(self, kind: str) -> int:
        """Messages ready in ``<ns>.dead.<kind>`` (0 when the queue does not exist)."""
        assert self._connection is not None
        # A passive declare of a missing queue closes its channel: use a spare one.
        probe = await self._connection.channel()
        try:
            ok = await probe.queue_declare(self.topology.dead_queue(kind), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        finally:
            if not probe.is_closed:
                await probe.close()
        return int(ok.message_count or 0)

    async def walk(
        self, kind: str, visit: Visit, limit: int = 0, until: Callable[[], bool] = lambda: False,
    ) -> int:
        """Call ``visit`` for each letter (at most ``limit``, 0: all that are there now,
        and only until ``until()`` is true); it returns True to keep the letter. Returns
        how many were visited."""
        count = await self.depth(kind)
        if limit:
            count = min(count, limit)
        seen = 0
        while seen < count and not until():
            message = await self.channel.basic_get(self.topology.dead_queue(kind), no_ack=False)
            if message.delivery_tag is None:  # GetEmpty: someone else took the rest
                break
            seen += 1
            if await visit(Letter.parse(kind, message)):
                await self.keep(kind, message)
            else:
                await self.channel.basic_ack(message.delivery_tag)
        return seen

    async def keep(self, kind: str, message: DeliveredMessage) -> None:
        """Put ``message`` back at the tail of its queue as a confirmed copy, then ack it;
        when no copy can be published, nack it back instead (requeue)."""
        props = message.header.properties
        headers = dict(props.headers or {})
        headers.pop("x-delivery-count", None)  # set by RabbitMQ on redelivery
        copy = aiormq.spec.Basic.Properties(
            content_type=props.content_type, delivery_mode=2, headers=headers,
            message_id=props.message_id, timestamp=props.timestamp,
        )
        assert message.delivery_tag is not None
        try:
            await self._publish(message.body, self.topology.dead_exchange,
                                self.topology.dead_routing_key(kind), copy)
        except PublishRejected:
            await self.channel.basic_nack(message.delivery_tag, requeue=True)
            return
        await self.channel.basic_ack(message.delivery_tag)

    async def replay(
        self, kind: str, *, reason: Optional[str] = None, limit: int = 0, batch: int = 500,
    ) -> ReplayReport:
        """Publish the records of the letters of ``kind`` (with ``reason`` when given) to
        the ingest exchange, up to ``limit`` letters (0: all), ``batch`` records per
        message; each letter leaves the queue only after its message was confirmed."""
        report = ReplayReport()
        pending: list[tuple[DeliveredMessage, list[Any]]] = []

        async def flush() -> None:
            if not pending:
                return
            taken = pending[:]
            pending.clear()
            records = [r for _, records in taken for r in records]
            try:
                await self._publish(
                    msgpack.packb(records, use_bin_type=True), self.topology.exchange,
                    self.topology.routing_key(kind), _ingest_properties(kind, len(records)),
                )
            except PublishRejected as exc:
                report.failed += len(taken)
                report.error = str(exc)
                for message, _ in taken:
                    await self.keep(kind, message)
                return
            for message, _ in taken:
                assert message.delivery_tag is not None
                await self.channel.basic_ack(message.delivery_tag)
            report.replayed_letters += len(taken)
            report.replayed_records += len(records)

        count = await self.depth(kind)
        seen = 0
        while seen < count and not report.error:
            if limit and report.replayed_letters + len(pending) >= limit:
                break
            message = await self.channel.basic_get(self.topology.dead_queue(kind), no_ack=False)
            if message.delivery_tag is None:
                break
            seen += 1
            letter = Letter.parse(kind, message)
            if letter.records is None:
                report.not_replayable += 1
                await self.keep(kind, message)
            elif reason is not None and letter.reason != reason:
                report.kept += 1
                await self.keep(kind, message)
            else:
                pending.append((message, letter.records))
                if sum(len(r) for _, r in pending) >= batch:
                    await flush()
        await flush()
        return report

    async def _publish(
        self, body: bytes, exchange: str, routing_key: str,
        properties: aiormq.spec.Basic.Properties,
    ) -> None:
        """Publish and wait for the confirm; :class:`PublishRejected` unless it was acked
        and routed."""
        try:
            confirm = await self.channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties,
                mandatory=True,
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishRejected("unroutable", f"no queue is bound for {routing_key!r}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            # aiormq 6.9 and 7.x raise this for a Basic.Nack instead of returning it.
            raise PublishRejected("refused", f"RabbitMQ refused the message ({routing_key})") from exc
        if isinstance(confirm, aiormq.spec.Basic.Nack):
            raise PublishRejected("refused", f"RabbitMQ refused the message ({routing_key})")


def _ingest_properties(kind: str, count: int) -> aiormq.spec.Basic.Properties:
    # The shape ``sluice server`` publishes; a fresh message_id, since the batch is new.
    return aiormq.spec.Basic.Properties(
        content_type="application/msgpack", delivery_mode=2,
        message_id=f"{REPLAY_CLIENT_ID}:{uuid.uuid4().hex}",
        headers={"kind": kind, "count": count, "client_id": REPLAY_CLIENT_ID,
                 "received_at": int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)},
    )

