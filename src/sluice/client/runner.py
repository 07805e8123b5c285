"""One client run as a service: a source filling the feed, ``--connections`` streams
draining it, the progress line, and the stop (finish what is in flight, bounded)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Optional

from ..errors import ClientRefused, ConfigError
from ..lifecycle import TaskOwner, wait_any
from ..logs import get_logger
from .feed import Feed
from .report import Stats, Summary, progress_loop, report_loop
from .settings import ClientSettings
from .sources import FileSource, GeneratorSource, MeasurementGenerator, Source, random_seed
from .stream import Stream

__all__ = ["ClientService", "build_source", "run"]

log = get_logger(__name__)


def build_source(settings: ClientSettings, stats: Stats) -> tuple[Source, Optional[int]]:
    """The configured source and, in generator mode, its seed. A file is opened here, so a
    bad path or an unreadable file fails at once (ConfigError), not after connecting."""
    linger = settings.linger_ms / 1000.0
    if settings.file:
        source = FileSource(settings.file, stats, batch_size=settings.batch_size, linger=linger,
                            kind=settings.kind)
        if settings.file != "-" and os.path.isdir(settings.file):
            raise ConfigError(f"--file {settings.file!r} is a directory, not a file")
        try:
            source.open()
        except OSError as exc:
            raise ConfigError(f"--file {settings.file!r} cannot be read: {exc.strerror or exc}") from exc
        return source, None
    seed = settings.seed if settings.seed is not None else random_seed()
    generator = MeasurementGenerator(seed, settings.instance_id, settings.sensors,
                                     extra_tags=settings.extra_tags, tag_bytes=settings.tag_bytes)
    return GeneratorSource(
        generator, stats, batch_size=settings.batch_size, linger=linger, rate=settings.rate,
        count=settings.count, duration=settings.duration, kind=settings.kind,
    ), seed


async def _produce(source: Source, feed: Feed, stop: asyncio.Event, stats: Stats) -> None:
    try:
        await source.run(feed, stop)
    except Exception as exc:
        # The streams still send what was read; the summary and exit status say the rest was not.
        stats.source_error = f"{type(exc).__name__}: {exc}"
        log.error("source_failed", error=repr(exc), produced_records=stats.produced)
    finally:
        feed.close()


class ClientService:
    """``sluice client`` in the shape of every sluice service (:class:`sluice.lifecycle.Service`):
    built from its settings, ``start()`` connects and streams in the background,
    ``shutdown()`` stops the source and lets the streams finish what is in flight (bounded
    by ``--drain-timeout``), ``close()`` cancels whatever is left. Unlike the long-running
    services it also ends by itself: ``done`` is set once every stream has finished (the
    input is sent and acked, or given up on). ``failed`` is set when the server refused this
    client for good (TLS verification or authentication): every stream would meet the same
    answer. :meth:`summary` is the report either way.
    """

    name = "client"

    def __init__(self, settings: ClientSettings, *, progress: Optional[bool] = None) -> None:
        self.settings = settings
        self.stats = Stats()
        self.done = asyncio.Event()
        self.failed = asyncio.Event()
        self.failure: Optional[BaseException] = None
        self._progress = progress
        self._stop = asyncio.Event()
        self._seed: Optional[int] = None
        self._streams: list[Stream] = []
        self._running: set[asyncio.Task[None]] = set()
        self._producer: Optional[asyncio.Task[None]] = None
        self._feed = Feed(maxsize=4 * settings.connections)  # a few batches per connection queued ahead
        self._tasks = TaskOwner("client")

    async def start(self) -> None:
        """Open the input (a ConfigError if it cannot be read), then stream in the background."""
        settings, stats = self.settings, self.stats
        source, self._seed = build_source(settings, stats)
        host, port = settings.host_port
        credentials = settings.credentials()
        # Each stream's hello adds ".<session>"; the run token keeps a rerun with the same
        # --instance-id from repeating message ids (<client_id>:<seq>) of an earlier run.
        instance = settings.instance_id.encode("utf-8")[:96].decode("utf-8", errors="ignore")
        token = os.urandom(3).hex()
        self._streams = [
            Stream(i, host, port, f"{instance}-{token}-{i}", self._feed, stats,
                   max_tries=settings.max_tries, give_up_after=settings.give_up_after,
                   credentials=credentials)
            for i in range(settings.connections)
        ]
        stats.started = time.monotonic()
        self._producer = self._tasks.spawn(_produce(source, self._feed, self._stop, stats),
                                           name="client-source")
        self._running = {self._tasks.spawn(s.run(), name=f"client-stream-{s.index}")
                         for s in self._streams}
        if self._progress if self._progress is not None else sys.stderr.isatty():
            self._tasks.spawn(progress_loop(stats), name="client-progress")
        elif self._progress is None and settings.report_interval > 0:
            self._tasks.spawn(report_loop(stats, sys.stderr, settings.report_interval, settings.json),
                              name="client-report")
        self._tasks.spawn(self._watch(), name="client-watch")

    async def _watch(self) -> None:
        running = set(self._running)
        while running:
            _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            fatal = next((s.fatal for s in self._streams if s.fatal), None)
            if fatal is not None:
                self.stats.fatal_error = fatal
                self.failure = ClientRefused(fatal)
                self.failed.set()
                return
        self.done.set()

    async def shutdown(self) -> dict[str, Any]:
        """Stop the source; the streams send what was read, within ``--drain-timeout``."""
        self._stop.set()
        running = {task for task in self._running if not task.done()}
        if running:
            log.info("client_draining", drain_timeout=self.settings.drain_timeout,
                     in_flight_records=self.stats.inflight)
            await asyncio.wait(running, timeout=self.settings.drain_timeout)
        return {"acked_records": self.stats.acked, "unacked_records": self.stats.produced - self.stats.acked}

    async def close(self) -> None:
        if self._producer is not None and not self._producer.done():
            # Every stream gave up, or the drain ran out: nothing can send what it still makes.
            self._producer.cancel()
        left = self._feed.drain()
        held = sum(s.held() for s in self._streams)
        if left or held:
            log.error("client_unsent", queued_records=sum(b.count for b in left), held_records=held)
        await self._tasks.close()

    def summary(self) -> Summary:
        return Summary.of(self.stats, self.settings.target, self.settings.connections, self._seed)


async def run(settings: ClientSettings, *, stop: Optional[asyncio.Event] = None,
              progress: Optional[bool] = None) -> Summary:
    """Stream until the input ends (or ``stop`` is set, or the server refuses this client
    for good) and return the summary: the service without the signal handling."""
    service = ClientService(settings, progress=progress)
    try:
        await service.start()
        await wait_any(stop or asyncio.Event(), service.done, service.failed)
        if service.failure is None:
            await service.shutdown()
    finally:
        await service.close()
    return service.summary()
