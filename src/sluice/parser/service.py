"""The parser as one service object (see :class:`sluice.lifecycle.Service`): the
Elasticsearch client and its probe, the index template, the consuming :class:`Worker`,
the dead-letter event writer and the ops side port.

Startup order matters: the index template is installed (waiting out an unreachable
Elasticsearch) before the worker consumes anything, so no document creates an index
before its mapping exists. Shutdown stops consuming, finishes the bulks in flight and
acks them (bounded by ``drain_timeout``), then writes the queued dead-letter events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Optional

from ..backoff import Backoff
from ..errors import IndexingError, StoreUnavailable
from ..es import ensure_template, make_client
from ..lifecycle import TaskOwner
from ..logs import get_logger
from ..ops import OpsServer
from ..records import TsWindow
from ..topology import Topology
from .deadevents import DeadLetterEvents
from .deadletter import DeadLetterPublisher
from .delivery import Chain, MessageDecoder
from .indexer import BulkIndexer
from .serializers import serializers
from .settings import ParserSettings
from .stats import ParserMetrics
from .store import StoreProbe
from .worker import Worker

__all__ = ["ParserService"]

log = get_logger(__name__)

# At shutdown, how long queued dead-letter event documents may take to be written.
_EVENTS_FLUSH_TIMEOUT = 5.0


class ParserService:
    """``sluice parser`` as an object: built from its settings and parser chains."""

    name = "parser"

    def __init__(self, settings: ParserSettings, chains: Mapping[str, Chain]) -> None:
        self.settings = settings
        self.metrics = ParserMetrics()
        # The transport's own retries are immediate; ours back off while the messages stay
        # unacked, so the client makes exactly one attempt per call.
        self.client = make_client(
            settings.es_url, max_retries=0, retry_on_timeout=False,
            request_timeout=settings.es_timeout, serializers=serializers(),
            **settings.es_client_options(),
        )
        self.probe = StoreProbe(self.client, self.metrics, stall_timeout=settings.stall_timeout)
        topology = Topology(settings.namespace, delivery_limit=settings.delivery_limit,
                            max_length_bytes=settings.queue_max_bytes)
        self.events = DeadLetterEvents(
            self.client, settings.index_prefix, self.metrics,
            parsers={kind: ",".join(chain.names) for kind, chain in chains.items()},
            instance=settings.instance_id,
        )
        self.worker = Worker(
            settings,
            topology=topology,
            decoder=MessageDecoder(settings.index_prefix, chains,
                                   TsWindow(settings.ts_max_age_days, settings.ts_max_ahead_days)),
            indexer=BulkIndexer(
                self.client, self.metrics, retry_cap=settings.retry_cap,
                max_retries=settings.max_retries, on_store_state=self.probe.mark,
                item_retry_limit=settings.item_retry_limit, on_progress=self.probe.progressed,
            ),
            dead_letters=DeadLetterPublisher(topology, settings.instance_id),
            metrics=self.metrics,
            events=self.events,
        )
        self.ops = OpsServer(
            self.metrics.registry,
            ready=lambda: {"broker": self.worker.link.is_up, "elasticsearch": self.probe.up,
                           "indexing": not self.probe.stalled()},
            host=settings.host,
            port=settings.http_port,
        )
        self._tasks = TaskOwner("parser")
        self._started = False
        #: set when the service cannot go on: the broker link failed for good, or
        #: Elasticsearch refused the index template
        self.failed = asyncio.Event()
        #: never set: a parser consumes until it is stopped
        self.done = asyncio.Event()
        self._failure: Optional[BaseException] = None

    @property
    def failure(self) -> Optional[BaseException]:
        return self._failure or self.worker.link.failure

    async def start(self) -> None:
        """Serve the ops port, then install the template and consume in the background."""
        await self.ops.start()
        log.info("parser_started", http_port=self.ops.bound_port, kinds=list(self.settings.kinds))
        self._tasks.spawn(self.probe.run(), name="es-probe")
        self._tasks.spawn(self._run(), name="parser-start")

    async def _run(self) -> None:
        try:
            await self._install_template()
        except IndexingError as exc:
            log.error("template_install_failed", error=str(exc))
            self._failure = exc
            self.failed.set()
            return
        self._tasks.spawn(self.events.run(), name="dead-letter-events")
        self.worker.start()
        self._started = True
        # e.g. a queue declared with other arguments
        await self.worker.link.failed.wait()
        self.failed.set()

    async def _install_template(self) -> None:
        """Install the index template, waiting out an unreachable Elasticsearch."""
        backoff = Backoff(base=0.5, cap=10.0, floor=0.1)
        while True:
            try:
                await ensure_template(self.client, self.settings.index_prefix,
                                      retention_days=self.settings.retention_days)
            except StoreUnavailable as exc:
                self.probe.mark(False)
                log.warning("template_install_waiting", error=str(exc))
            else:
                self.probe.mark(True)
                return
            await asyncio.sleep(backoff.next_delay())

    async def shutdown(self) -> dict[str, Any]:
        """Stop consuming, finish and ack the bulks in flight, write the queued events."""
        if not self._started:
            return {"drained": True}  # nothing was consumed
        drained = await self.worker.stop(self.settings.drain_timeout)
        # Best effort: the dead letters themselves are already confirmed in RabbitMQ.
        await self.events.flush(_EVENTS_FLUSH_TIMEOUT)
        return {"drained": drained}

    async def close(self) -> None:
        await self.worker.close()
        await self._tasks.close()
        await self.ops.close()
        await self.client.close()
