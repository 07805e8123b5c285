"""The RabbitMQ topology, declared the same way by servers and parsers.

Every declaration is idempotent, so whichever service starts first creates it and the
others find it in place::

    <ns>.ingest (topic) --raw.<kind>--> <ns>.raw.<kind> (quorum queue)
                                            | dead-lettered (delivery limit, rejects)
    <ns>.dead   (topic) --dead.<kind>--> <ns>.dead.<kind> (quorum queue)

Quorum queues survive a broker restart, replicate in a cluster, and count redeliveries,
which gives the delivery limit that stops a poison message from looping forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiormq

__all__ = ["Topology"]


@dataclass(frozen=True)
class Topology:
    namespace: str = "sluice"
    #: deliveries of one message before RabbitMQ dead-letters it. It exists to stop a
    #: message that crashes parsers from looping forever; poison bodies and bad records
    #: are dead-lettered by the parser itself, so the limit is set high enough that
    #: restarts and broker reconnects during a long store outage do not reach it.
    delivery_limit: int = 20

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
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": self.dead_routing_key(kind),
            "x-delivery-limit": self.delivery_limit,
        }

    async def declare(self, channel: Any, kinds: Iterable[str]) -> None:
        """Declare exchanges, and the raw and dead-letter queue of every kind."""
        await channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(
            exchange=self.dead_exchange, exchange_type="topic", durable=True
        )
        for kind in kinds:
            await channel.queue_declare(
                self.raw_queue(kind), durable=True, arguments=self.raw_queue_arguments(kind)
            )
            await channel.queue_bind(self.raw_queue(kind), self.exchange, self.routing_key(kind))
            await channel.queue_declare(
                self.dead_queue(kind), durable=True, arguments={"x-queue-type": "quorum"}
            )
            await channel.queue_bind(
                self.dead_queue(kind), self.dead_exchange, self.dead_routing_key(kind)
            )

    async def delete(self, connection: Any, kinds: Iterable[str]) -> None:
        """Delete the queues of these kinds and both exchanges; missing ones are skipped.

        For tests and benchmarks that clean up after themselves. A failed delete closes
        its channel, so each one gets a channel of its own.
        """
        for kind in kinds:
            for queue in (self.raw_queue(kind), self.dead_queue(kind)):
                channel = await connection.channel()
                with contextlib.suppress(aiormq.exceptions.AMQPError):
                    await channel.queue_delete(queue)
        for exchange in (self.exchange, self.dead_exchange):
            channel = await connection.channel()
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await channel.exchange_delete(exchange)
