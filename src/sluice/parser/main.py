"""``sluice parser``: consume raw batches, parse every record, bulk-index into Elasticsearch.

Configuration errors (an unknown parser name, a chain that does not take a kind, a bad
option) stop startup before anything connects: ``sluice`` then exits with status 2 and a
message listing the known parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..backoff import Backoff
from ..errors import ConfigError, IndexingError, StoreUnavailable
from ..es import ensure_template, index_name, make_client
from ..lifecycle import TaskOwner, run_service, stop_on_signals, wait_any
from ..logs import configure_logging, get_logger
from ..ops import OpsServer
from ..protocol import validate_kind
from ..records import TsWindow
from ..settings import BrokerSettings, StoreSettings, describe, load, option
from ..settings import add_arguments as add_settings_arguments
from ..topology import Topology
from .deadevents import DeadLetterEvents
from .deadletter import DeadLetterPublisher
from .delivery import Chain, MessageDecoder
from .indexer import BulkIndexer
from .registry import build_chain, parse_options
from .serializers import serializers
from .stats import ParserMetrics
from .store import StoreProbe
from .worker import Worker

__all__ = ["HELP", "ParserSettings", "add_arguments", "build_chains", "main", "run"]

HELP = (
    "Consume raw record batches from RabbitMQ, parse them with a chain of pluggable parsers "
    "and bulk-index the documents into Elasticsearch (exactly-once effect: create by id)."
)

log = get_logger(__name__)

# At shutdown, how long queued dead-letter event documents may take to be written.
_EVENTS_FLUSH_TIMEOUT = 5.0


@dataclass(frozen=True)
class ParserSettings(BrokerSettings, StoreSettings):
    kinds: tuple[str, ...] = option(
        ("measurement",), "record kinds to consume, comma-separated (one queue each)"
    )
    parsers: str = option(
        "measurement",
        "parser chain: 'a,b' for every kind, or per kind 'kind=a,b;kind2=c' "
        "(an entry without 'kind=' is the chain for the other kinds)",
    )
    parser_options: str = option(
        "", "parser options NAME.KEY=VALUE separated by ';' (or repeat --parser-option)"
    )
    ts_max_age_days: float = option(
        30.0, "records whose ts is older than this many days are dead-lettered "
        "(ts_out_of_range) instead of creating old daily indices; 0 = no bound")
    ts_max_ahead_days: float = option(
        1.0, "records whose ts is more than this many days ahead are dead-lettered "
        "(ts_out_of_range); 0 = no bound")
    prefetch: int = option(
        200, "unacked messages per queue: bounds memory and the work redone after a crash"
    )
    prefetch_bytes: int = option(
        64 * 1024 * 1024, "message bytes held unacked before consuming pauses (RabbitMQ's "
        "prefetch counts messages only); it resumes at half")
    bulk_size: int = option(5000, "documents per bulk request")
    bulk_max_bytes: int = option(
        10 * 1024 * 1024, "a bulk request is sent once its actions reach this many bytes"
    )
    bulk_linger_ms: int = option(50, "longest wait for a bulk to fill before it is sent")
    bulk_concurrency: int = option(2, "bulk requests in flight at once")
    max_retries: int = option(
        0, "retries of a failing bulk before its messages are requeued (0 = until it works)"
    )
    retry_cap: float = option(10.0, "longest wait between bulk retries, seconds")
    item_retry_limit: int = option(
        500, "retries of one bulk item that keeps failing with a transient error (429, 5xx, "
        "cluster block, ...) while its request goes through; then it is dead-lettered with "
        "reason es_retry_exhausted (0 = retry for ever). 500 is about 40 minutes at the "
        "default retry_cap"
    )
    stall_timeout: float = option(
        120.0, "/readyz turns false when no bulk settled a single record for this many "
        "seconds while messages wait"
    )
    es_timeout: float = option(30.0, "timeout of one Elasticsearch request, seconds")
    # Below docker compose's 30 s stop_grace_period, so the drain ends before SIGKILL.
    drain_timeout: float = option(20.0, "on SIGTERM, how long the bulks in flight may take")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.kinds:
            raise ConfigError("kinds: name at least one record kind")
        for kind in self.kinds:
            try:
                validate_kind(kind)
            except ValueError as exc:
                raise ConfigError(f"kinds: {exc}") from exc
        try:
            index_name(self.index_prefix, "kind", 0)
        except ValueError as exc:
            raise ConfigError(f"index_prefix: {exc}") from exc
        positive = {
            "prefetch": self.prefetch, "bulk_size": self.bulk_size,
            "bulk_concurrency": self.bulk_concurrency, "bulk_max_bytes": self.bulk_max_bytes,
            "prefetch_bytes": self.prefetch_bytes,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.ts_max_age_days < 0 or self.ts_max_ahead_days < 0:
            raise ConfigError("ts_max_age_days and ts_max_ahead_days cannot be negative")
        if min(self.max_retries, self.bulk_linger_ms, self.item_retry_limit) < 0:
            raise ConfigError("max_retries, bulk_linger_ms and item_retry_limit cannot be negative")
        if min(self.retry_cap, self.es_timeout, self.drain_timeout, self.stall_timeout) <= 0:
            raise ConfigError(
                "retry_cap, es_timeout, drain_timeout and stall_timeout must be positive"
            )


def _chain_names(spec: str, kinds: Sequence[str]) -> dict[str, list[str]]:
    default: list[str] | None = None
    per_kind: dict[str, list[str]] = {}
    for entry in spec.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        kind, eq, names = entry.partition("=")
        parsed = [n.strip() for n in (names if eq else entry).split(",") if n.strip()]
        if eq:
            per_kind[kind.strip()] = parsed
        else:
            default = parsed
    out: dict[str, list[str]] = {}
    for kind in kinds:
        names_for_kind = per_kind.get(kind, default)
        if not names_for_kind:
            raise ConfigError(
                f"parsers: no parser chain for kind {kind!r} in {spec!r}; "
                "give 'a,b' for every kind or 'kind=a,b'"
            )
        out[kind] = names_for_kind
    return out


def build_chains(
    spec: str, kinds: Sequence[str], options: Mapping[str, str]
) -> dict[str, Chain]:
    """One parser chain per kind from ``--parsers``; each gets the options of its parsers."""
    chains: dict[str, Chain] = {}
    for kind, names in _chain_names(spec, kinds).items():
        own = {k: v for k, v in options.items() if k.partition(".")[0] in names}
        chain = build_chain(names, own)
        if not chain.accepts(kind):
            raise ConfigError(f"parser chain {','.join(names)} does not accept kind {kind!r}")
        chains[kind] = chain
    used = {name for chain in chains.values() for name in chain.names}
    stray = sorted(k for k in options if k.partition(".")[0] not in used)
    if stray:
        raise ConfigError(f"parser option(s) {', '.join(stray)} name no parser in use")
    return chains


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ParserSettings)
    parser.add_argument(
        "--parser-option", dest="parser_option", action="append", default=None,
        metavar="NAME.KEY=VALUE", help="one parser option; repeatable; added to --parser-options",
    )


def main(args: argparse.Namespace) -> int:
    settings = load(ParserSettings, args)
    options = parse_options(settings.parser_options)
    options.update(parse_options(getattr(args, "parser_option", None)))
    chains = build_chains(settings.parsers, settings.kinds, options)
    configure_logging("parser", settings.instance_id, settings.log_level)
    log.info("parser_starting", settings=describe(settings),
             chains={kind: ",".join(chain.names) for kind, chain in chains.items()})
    return run_service(functools.partial(run, settings, chains))


async def _install_template(
    settings: ParserSettings, probe: StoreProbe, stop: asyncio.Event
) -> bool:
    """Install the index template, waiting out an unreachable Elasticsearch; False if
    told to stop first. Documents must not create an index before the mapping exists."""
    backoff = Backoff(base=0.5, cap=10.0, floor=0.1)
    while not stop.is_set():
        try:
            await ensure_template(
                probe.client, settings.index_prefix, retention_days=settings.retention_days
            )
        except StoreUnavailable as exc:
            probe.mark(False)
            log.warning("template_install_waiting", error=str(exc))
        else:
            probe.mark(True)
            return True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff.next_delay())
    return False


async def run(settings: ParserSettings, chains: Mapping[str, Chain]) -> int:
    metrics = ParserMetrics()
    # The transport's own retries are immediate; ours back off while the messages stay
    # unacked, so the client makes exactly one attempt per call.
    client = make_client(
        settings.es_url, max_retries=0, retry_on_timeout=False,
        request_timeout=settings.es_timeout, serializers=serializers(),
        **settings.es_client_options(),
    )
    probe = StoreProbe(client, metrics, stall_timeout=settings.stall_timeout)
    topology = Topology(settings.namespace, delivery_limit=settings.delivery_limit,
                        max_length_bytes=settings.queue_max_bytes)
    events = DeadLetterEvents(
        client, settings.index_prefix, metrics,
        parsers={kind: ",".join(chain.names) for kind, chain in chains.items()},
        instance=settings.instance_id,
    )
    worker = Worker(
        amqp_url=settings.amqp_url,
        topology=topology,
        kinds=settings.kinds,
        decoder=MessageDecoder(settings.index_prefix, chains,
                               TsWindow(settings.ts_max_age_days, settings.ts_max_ahead_days)),
        indexer=BulkIndexer(
            client, metrics, retry_cap=settings.retry_cap, max_retries=settings.max_retries,
            on_store_state=probe.mark, item_retry_limit=settings.item_retry_limit,
            on_progress=probe.progressed,
        ),
        dead_letters=DeadLetterPublisher(topology, settings.instance_id),
        metrics=metrics,
        events=events,
        prefetch=settings.prefetch,
        bulk_size=settings.bulk_size,
        bulk_linger=settings.bulk_linger_ms / 1000,
        concurrency=settings.bulk_concurrency,
        bulk_max_bytes=settings.bulk_max_bytes,
        prefetch_bytes=settings.prefetch_bytes,
    )
    ops = OpsServer(
        metrics.registry,
        ready=lambda: {
            "broker": worker.link.is_up, "elasticsearch": probe.up, "indexing": not probe.stalled(),
        },
        host="0.0.0.0",
        port=settings.http_port,
    )
    tasks = TaskOwner("parser")
    stop = asyncio.Event()
    remove_handlers = stop_on_signals(stop)
    try:
        await ops.start()
        log.info("parser_started", http_port=ops.bound_port, kinds=list(settings.kinds))
        tasks.spawn(probe.run(), name="es-probe")
        try:
            installed = await _install_template(settings, probe, stop)
        except IndexingError as exc:
            log.error("template_install_failed", error=str(exc))
            return 1
        if installed:
            tasks.spawn(events.run(), name="dead-letter-events")
            worker.start()
            await wait_any(stop, worker.link.failed)
            if worker.link.failure is not None:  # e.g. a queue declared with other arguments
                log.error("parser_cannot_start", error=str(worker.link.failure))
                return 2
            log.info("parser_stopping")
            drained = await worker.stop(settings.drain_timeout)
            # Best effort: the dead letters themselves are already confirmed in RabbitMQ.
            await events.flush(_EVENTS_FLUSH_TIMEOUT)
            log.info("parser_stopped", drained=drained)
    finally:
        remove_handlers()
        await worker.close()
        await tasks.close()
        await ops.close()
        await client.close()
    return 0

