"""The RabbitMQ topology, declared the same way by servers and parsers.

Every declaration is idempotent, so whichever service starts first creates it and the
others find it in place::

    <ns>.ingest (topic) --raw.<kind>--> <ns>.raw.<kind> (quorum queue)
                                            | dead-lettered (delivery limit, rejects)
    <ns>.dead   (topic) --dead.<kind>--> <ns>.dead.<kind> (quorum queue)

Quorum queues survive a broker restart, replicate in a cluster, and count redeliveries,
which gives the delivery limit that stops a poison message from looping forever.

Both queues are bounded: past ``x-max-length-bytes`` RabbitMQ nacks new publishes
(``x-overflow: reject-publish``) instead of filling its disk, and servers pass that on to
clients as a ``refused`` nack, which clients back off from and resend. Dead-lettering is
``at-least-once`` (RabbitMQ 3.10+; it requires ``reject-publish``): a message leaves the raw
queue only once the dead-letter queue has confirmed it, so it is never lost on the way,
and a full dead-letter queue keeps it in the raw queue.

RabbitMQ refuses to redeclare an existing queue with other arguments (PRECONDITION_FAILED);
that is a :class:`~sluice.errors.ConfigError` naming the queue and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel

from .errors import ConfigError

__all__ = ["DEFAULT_QUEUE_MAX_BYTES", "Topology"]

#: per queue: a day of a 10k records/s stream of 130-byte records is about 110 GiB, so this
#: holds a few minutes of such a stream and hours of a modest one; size it to the disk
DEFAULT_QUEUE_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class Topology:
    namespace: str = "sluice"
    #: deliveries of one message before RabbitMQ dead-letters it. It exists to stop a
    #: message that crashes parsers from looping forever; poison bodies and bad records
    #: are dead-lettered by the parser itself, so the limit is set high enough that
    #: restarts and broker reconnects during a long store outage do not reach it.
    delivery_limit: int = 20
    #: bytes each raw and dead-letter queue may hold before publishes to it are refused
    max_length_bytes: int = DEFAULT_QUEUE_MAX_BYTES

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.ingest"

    @property
    def dead_exchange(self) -> str:
        return f"{self.namespace}.dead"

    @staticmethod
    def routing_key(kind: str) -> str:
        return f"raw.{kind}"

    @staticmethod
    def dead_routing_key(kind: str) -> str:
        return f"dead.{kind}"

    def raw_queue(self, kind: str) -> str:
        return f"{self.namespace}.raw.{kind}"

    def dead_queue(self, kind: str) -> str:
        return f"{self.namespace}.dead.{kind}"

    def raw_queue_arguments(self, kind: str) -> dict[str, Any]:
        return {
            **self.dead_queue_arguments(),
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": self.dead_routing_key(kind),
            "x-dead-letter-strategy": "at-least-once",
            "x-delivery-limit": self.delivery_limit,
        }

    def dead_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-overflow": "reject-publish",
            "x-max-length-bytes": self.max_length_bytes,
        }

    async def _declare_queue(self, channel: AbstractChannel, queue: str, arguments: dict[str, Any]) -> None:
        try:
            await channel.queue_declare(queue, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConfigError(
                f"queue {queue!r} exists with other arguments than this version declares "
                f"({exc}); it wants {arguments}. Fix: stop the producers, let the parsers drain "
                f"the queue, then delete it (rabbitmqctl delete_queue {queue}) and restart; "
                "or run every service with the settings that declared it "
                "(delivery_limit, queue_max_bytes)"
            ) from exc

    async def declare(self, channel: AbstractChannel, kinds: Iterable[str]) -> None:
        """Declare exchanges, and the raw and dead-letter queue of every kind."""
        await channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(
            exchange=self.dead_exchange, exchange_type="topic", durable=True
        )
        for kind in kinds:
            await self._declare_queue(channel, self.raw_queue(kind), self.raw_queue_arguments(kind))
            await channel.queue_bind(self.raw_queue(kind), self.exchange, self.routing_key(kind))
            await self._declare_queue(channel, self.dead_queue(kind), self.dead_queue_arguments())
            await channel.queue_bind(
                self.dead_queue(kind), self.dead_exchange, self.dead_routing_key(kind)
            )
