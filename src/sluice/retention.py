"""``sluice retention``: delete daily indices older than ``retention_days``.

A daily index ``<prefix>-<kind>-YYYY.MM.DD`` (records, and the dead-letter events of
kind ``dead``) holds one UTC day. It is deleted once that day is more than
``retention_days`` days before today (UTC): with 30, today's index and the 30 before it
stay. The day comes from the name, not the creation date, so a backfill of old records is
deleted on time too; indices dated in the future are never touched, and neither is any
index whose name does not have exactly this shape.

Where Elasticsearch has ILM the policy installed beside the template deletes indices as
well (counted from their creation); running this as well is harmless. Where it has none
(the osmem stand-in) this command is the retention: compose runs it as the service
``retention`` with ``--every 86400``. Real clusters refuse wildcard deletes by default,
so indices are deleted by name, a few at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from .errors import ConfigError, IndexingError
from .es import index_pattern, make_client
from .lifecycle import run_service, stop_on_signals
from .logs import configure_logging, get_logger
from .protocol import KIND_PATTERN
from .settings import StoreSettings, describe, load, option
from .settings import add_arguments as add_settings_arguments
from .storeerrors import store_error

__all__ = ["HELP", "RetentionSettings", "add_arguments", "expired", "main", "run_once"]

HELP = (
    "Delete daily indices older than --retention-days (once, or every --every seconds); "
    "the retention where Elasticsearch has no index lifecycle management."
)

log = get_logger(__name__)

_DELETE_CHUNK = 50  # names per DELETE request: keeps the URL short
# With --every, a failed run is tried again this soon rather than a whole period later.
_RETRY_AFTER_FAILURE = 300.0


@dataclass(frozen=True)
class RetentionSettings(StoreSettings):
    every: float = option(0.0, "run again every this many seconds (0 = once and exit)")
    dry_run: bool = option(False, "only log what would be deleted")
    es_timeout: float = option(60.0, "timeout of one Elasticsearch request, seconds")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every < 0 or self.es_timeout <= 0:
            raise ConfigError("every cannot be negative and es_timeout must be positive")


def expired(names: Iterable[str], prefix: str, retention_days: int, today: dt.date) -> list[str]:
    """The names of daily indices of ``prefix`` whose day is more than ``retention_days``
    days before ``today``; nothing when ``retention_days`` is 0."""
    if retention_days <= 0:
        return []
    shape = re.compile(
        re.escape(prefix) + f"-(?:{KIND_PATTERN.pattern})" + r"-(\d{4})\.(\d{2})\.(\d{2})\Z"
    )
    oldest_kept = today - dt.timedelta(days=retention_days)
    out = []
    for name in names:
        match = shape.match(name)
        if match is None:
            continue
        try:
            day = dt.date(*(int(part) for part in match.groups()))
        except ValueError:
            continue  # "2024.02.31": not one of ours
        if day < oldest_kept:
            out.append(name)
    return sorted(out)


async def _index_names(client: AsyncElasticsearch, prefix: str) -> list[str]:
    # Closed indices too: closing one does not exempt it from retention.
    found = await client.indices.get(
        index=index_pattern(prefix), allow_no_indices=True, ignore_unavailable=True,
        expand_wildcards="open,closed",
    )
    return list(found.body)


async def run_once(
    client: AsyncElasticsearch, prefix: str, retention_days: int, *,
    today: dt.date | None = None, dry_run: bool = False,
) -> list[str]:
    """Delete the expired daily indices of ``prefix``; returns their names."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    try:
        names = expired(await _index_names(client, prefix), prefix, retention_days, today)
        if not dry_run:
            for start in range(0, len(names), _DELETE_CHUNK):
                chunk: Sequence[str] = names[start:start + _DELETE_CHUNK]
                await client.indices.delete(index=",".join(chunk), ignore_unavailable=True)
    except (ApiError, TransportError) as exc:
        raise store_error(exc, "retention failed") from exc
    log.info("retention_done", deleted=len(names), indices=names[:100], dry_run=dry_run,
             retention_days=retention_days, oldest_kept=str(today - dt.timedelta(days=retention_days)))
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, RetentionSettings)


def main(args: argparse.Namespace) -> int:
    settings = load(RetentionSettings, args)
    configure_logging("retention", settings.instance_id, settings.log_level)
    log.info("retention_starting", settings=describe(settings))
    return run_service(lambda: _run(settings))


async def _run(settings: RetentionSettings) -> int:
    client = make_client(settings.es_url, request_timeout=settings.es_timeout,
                         **settings.es_client_options())
    stop = asyncio.Event()
    remove_handlers = stop_on_signals(stop)
    try:
        while True:
            try:
                await run_once(client, settings.index_prefix, settings.retention_days,
                               dry_run=settings.dry_run)
                status = 0
            except IndexingError as exc:
                log.error("retention_failed", error=str(exc)[:500])
                status = 1
            if not settings.every:
                return status
            pause = settings.every if status == 0 else min(settings.every, _RETRY_AFTER_FAILURE)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return 0
    finally:
        remove_handlers()
        await client.close()
