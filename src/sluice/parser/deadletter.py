"""Publishing rejected records to the dead-letter exchange.

Three things end up there, each as its own message on ``<ns>.dead`` with routing key
``dead.<kind>`` (bound to the queue ``<ns>.dead.<kind>``):

- a record a parser rejected (``RecordError``): body = the original record, msgpack;
- a record Elasticsearch refused for its content (mapping errors, other 4xx): the same;
- a poison message, whose body is not a msgpack array: body = the message body as
  received, reason ``poison``.

Headers say why: ``x-sluice-reason`` (a short slug, also the metrics label),
``x-sluice-error`` (human-readable detail), ``x-sluice-kind`` and
``x-sluice-source-message-id`` (the raw message the record came in).

Every publish is confirmed by RabbitMQ before the source message is acked, on the very
channel the source message came in on: if that channel dies in between, RabbitMQ gives
the message to another consumer, so a record can be dead-lettered twice but never lost.
A nacked dead letter (``PublishRejected``) makes the worker nack the source message with
requeue; so does a publish that failed while the channel stayed open.

Once confirmed, each letter is also counted as a small event document in Elasticsearch
(``deadevents.py``); that copy is best-effort, the RabbitMQ dead letter is authoritative.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import aiormq
import msgpack
from aiormq.abc import AbstractChannel

from ..errors import BrokerUnavailable, PublishRejected
from ..topology import Topology

__all__ = ["POISON", "DeadLetter", "DeadLetterPublisher"]

#: reason of a message whose body is not a msgpack array of records
POISON = "poison"

_MAX_ERROR = 2000
_MAX_RECORD_ID = 512


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    error: str
    body: bytes
    content_type: str = "application/msgpack"
    #: index of the record in its message; ``None`` for a whole (poison) message
    position: Optional[int] = None
    #: the record's ``id`` when it has a string one
    record_id: Optional[str] = None

    @classmethod
    def for_record(
        cls, reason: str, error: str, record: Any, position: Optional[int] = None
    ) -> DeadLetter:
        found = record.get("id") if isinstance(record, Mapping) else None
        record_id = found[:_MAX_RECORD_ID] if isinstance(found, str) and found else None
        try:
            body = msgpack.packb(record, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            # It came out of msgpack, so this should not happen; keep a readable trace.
            body, ctype = repr(record).encode("utf-8", "replace"), "text/plain"
            return cls(reason, error, body, ctype, position, record_id)
        return cls(reason, error, body, position=position, record_id=record_id)


class DeadLetterPublisher:
    def __init__(self, topology: Topology, instance: str) -> None:
        self._topology = topology
        self._instance = instance

    async def publish(
        self,
        channel: AbstractChannel,
        kind: str,
        letters: Sequence[DeadLetter],
        source_message_id: str | None,
    ) -> None:
        """Publish ``letters`` and wait for every confirm.

        Raises :class:`BrokerUnavailable` when the channel is gone, and
        :class:`PublishRejected` when RabbitMQ nacks or cannot route a letter.
        """
        if not letters:
            return
        results = await asyncio.gather(
            *(self._one(channel, kind, letter, source_message_id) for letter in letters),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _one(
        self, channel: AbstractChannel, kind: str, letter: DeadLetter, source: str | None
    ) -> None:
        headers: dict[str, Any] = {
            "x-sluice-reason": letter.reason,
            "x-sluice-error": letter.error[:_MAX_ERROR],
            "x-sluice-kind": kind,
            "x-sluice-parser": self._instance,
        }
        if source:
            headers["x-sluice-source-message-id"] = source
        properties = aiormq.spec.Basic.Properties(
            content_type=letter.content_type,
            delivery_mode=2,
            headers=headers,
            timestamp=dt.datetime.now(dt.timezone.utc),
        )
        try:
            confirm = await channel.basic_publish(
                letter.body,
                exchange=self._topology.dead_exchange,
                routing_key=self._topology.dead_routing_key(kind),
                properties=properties,
                mandatory=True,
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishRejected("unroutable", f"dead letter for {kind!r} unroutable") from exc
        except aiormq.exceptions.DeliveryError as exc:
            # aiormq 6.9 and 7.x raise this for a Basic.Nack (queue full with
            # reject-publish, a queue that is down, ...) instead of returning the frame.
            raise PublishRejected(
                "refused", f"RabbitMQ nacked a dead letter for {kind!r}"
            ) from exc
        except asyncio.CancelledError:
            # aiormq may cancel a pending confirm when the channel closes; that is a lost
            # link, unless this task itself is being cancelled.
            if channel.is_closed and not _cancelling():
                raise BrokerUnavailable("channel closed while publishing a dead letter") from None
            raise
        except Exception as exc:
            # A closing channel fails pending confirms with whatever closed it.
            raise BrokerUnavailable(f"cannot publish a dead letter: {exc!r}") from exc
        if isinstance(confirm, aiormq.spec.Basic.Nack):
            raise PublishRejected("refused", f"RabbitMQ nacked a dead letter for {kind!r}")


def _cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return bool(cancelling()) if cancelling is not None else False
