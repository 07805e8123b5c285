"""Runs one client: a source filling the feed, ``--connections`` streams draining it, the
progress line, and the stop on SIGINT/SIGTERM (finish what is in flight, bounded)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Optional

from ..errors import ConfigError
from ..lifecycle import TaskOwner, stop_on_signals
from ..logs import get_logger
from .feed import Feed
from .report import Stats, Summary, progress_loop, report_loop
from .settings import ClientSettings
from .sources import FileSource, GeneratorSource, MeasurementGenerator, Source, random_seed
from .stream import Stream

__all__ = ["build_source", "run"]

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


async def run(settings: ClientSettings, *, stop: Optional[asyncio.Event] = None,
              progress: Optional[bool] = None) -> Summary:
    """Stream until the input ends (or ``stop`` is set) and return the summary."""
    stats = Stats()
    source, seed = build_source(settings, stats)
    host, port = settings.host_port
    credentials = settings.credentials()
    # A few batches per connection queued ahead keeps every pipe full without hoarding.
    feed = Feed(maxsize=4 * settings.connections)
    stop = stop or asyncio.Event()
    remove_handlers = stop_on_signals(stop)
    # Each stream's hello adds ".<session>"; the run token keeps a rerun with the same
    # --instance-id from repeating message ids (<client_id>:<seq>) of an earlier run.
    instance = settings.instance_id.encode("utf-8")[:96].decode("utf-8", errors="ignore")
    token = os.urandom(3).hex()
    streams = [
        Stream(i, host, port, f"{instance}-{token}-{i}", feed, stats, max_tries=settings.max_tries,
               give_up_after=settings.give_up_after, credentials=credentials)
        for i in range(settings.connections)
    ]
    owner = TaskOwner("client")
    try:
        stats.started = time.monotonic()
        producer = owner.spawn(_produce(source, feed, stop, stats), name="client-source")
        running = {owner.spawn(s.run(), name=f"client-stream-{s.index}") for s in streams}
        if progress if progress is not None else sys.stderr.isatty():
            owner.spawn(progress_loop(stats), name="client-progress")
        elif progress is None and settings.report_interval > 0:
            owner.spawn(report_loop(stats, sys.stderr, settings.report_interval, settings.json),
                        name="client-report")
        stopping = owner.spawn(stop.wait(), name="client-stop")
        while running:
            done, _ = await asyncio.wait(running | {stopping}, return_when=asyncio.FIRST_COMPLETED)
            running -= done
            fatal = next((s.fatal for s in streams if s.fatal), None)
            if fatal is not None:
                # TLS or authentication refused: every stream would meet the same answer.
                stats.fatal_error = fatal
                for task in running:
                    task.cancel()
                if running:
                    await asyncio.wait(running)
                running = set()
                break
            if stopping in done:
                log.info("client_stopping", drain_timeout=settings.drain_timeout,
                         in_flight_records=stats.inflight)
                if running:
                    _, running = await asyncio.wait(running, timeout=settings.drain_timeout)
                break
        if not producer.done():
            # Every stream gave up: nothing can send what the source still makes.
            producer.cancel()
        left = feed.drain()
        if left or running:
            log.error("client_unsent", queued_records=sum(b.count for b in left),
                      held_records=sum(s.held() for s in streams))
    finally:
        remove_handlers()
        await owner.close()
    return Summary.of(stats, settings.target, settings.connections, seed)
