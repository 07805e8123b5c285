"""Elasticsearch: the client factory, the index template and index naming.

Documents go to daily indices ``<prefix>-<kind>-YYYY.MM.DD`` (UTC day of the record's
``@timestamp``), all matched by the composable template ``<prefix>`` for ``<prefix>-*``.
The parser also writes one small event per dead-lettered record into
``<prefix>-dead-YYYY.MM.DD`` (UTC day it was dead-lettered); the same template maps its
fields (:data:`DEAD_LETTER_KEYWORD_FIELDS` and ``error``).
Time-based indices rather than data streams: they behave the same on every server we
target (osmem, the test stand-in, rejects data streams), and ``create`` with an explicit
``_id`` into a named daily index makes redelivered records answer 409 instead of
indexing twice.

The parser writes through :func:`make_client` and :func:`index_name`; the API reads
through :func:`index_pattern`. Both call :func:`ensure_template` at startup, so whichever
starts first installs the mapping before any index is created.

The template carries a ``version`` (:data:`TEMPLATE_VERSION`) and is only ever replaced
by a newer one: during a rolling update old and new processes start in any order, and
the newer mapping stays. Where Elasticsearch has ILM, a lifecycle policy
``<prefix>-retention`` deletes each index ``retention_days`` after its creation and the
template attaches it; where it has none (the osmem stand-in), that is logged once and
``sluice retention`` (:mod:`sluice.retention`) deletes old daily indices by their name.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from collections.abc import Sequence
from typing import Any, Union

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from .logs import get_logger
from .protocol import KIND_PATTERN, KIND_RULE, RESERVED_KIND
from .storeerrors import request_fault, store_error
from .timestamps import MS_PER_DAY

__all__ = [
    "DEAD_KIND",
    "DEAD_LETTER_KEYWORD_FIELDS",
    "DEFAULT_PREFIX",
    "ERROR_IGNORE_ABOVE",
    "KEYWORD_FIELDS",
    "TEMPLATE_PRIORITY",
    "TEMPLATE_VERSION",
    "ensure_lifecycle_policy",
    "ensure_template",
    "index_name",
    "index_pattern",
    "index_template",
    "lifecycle_policy",
    "lifecycle_policy_name",
    "make_client",
    "store_error",
]

log = get_logger(__name__)

DEFAULT_PREFIX = "sluice"

# Above the built-in ``logs-*-*`` / ``metrics-*-*`` templates (priority 100) so a prefix
# such as "logs" never ties with them, which Elasticsearch rejects.
TEMPLATE_PRIORITY = 200

#: Bumped whenever the template changes; its ``version`` (and ``_meta.version``). A
#: process never replaces a template of a version at or above its own.
TEMPLATE_VERSION = 3

KEYWORD_FIELDS = ("id", "kind", "sensor", "metric", "unit", "parser")

#: The "kind" part of the dead-letter event indices ``<prefix>-dead-YYYY.MM.DD``; no
#: record kind may use it (the protocol refuses it).
DEAD_KIND = RESERVED_KIND

#: Keyword fields of the dead-letter event documents (besides ``kind`` and ``parser``,
#: already in :data:`KEYWORD_FIELDS`); the API counts them by ``reason``.
DEAD_LETTER_KEYWORD_FIELDS = ("reason", "source_message_id", "record_id", "instance")

#: ``error`` is a keyword too (exact-match and aggregatable); longer values stay in
#: ``_source`` but are not indexed. The parser truncates to this many characters anyway.
ERROR_IGNORE_ABOVE = 1024

_DATE_FORMAT = "strict_date_optional_time||epoch_millis"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)

# Index names are lowercase and a few characters are forbidden. Kinds follow the protocol's
# rule (protocol.KIND_PATTERN), which keeps "-" out of them for the same reason.
_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9_.\-]*\Z")

Hosts = Union[str, Sequence[str]]


def make_client(url: Hosts, **opts: Any) -> AsyncElasticsearch:
    """An ``AsyncElasticsearch`` for ``url`` (one URL, a comma-separated list, or a list).

    Credentials may be given in the URL (``http://user:pass@host:9200``). ``opts`` go to
    ``AsyncElasticsearch`` and override the defaults here: bulk requests of a few
    thousand documents can take longer than the library's 10 s default timeout.
    """
    hosts = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
    hosts = [h for h in hosts if h]
    if not hosts:
        raise ValueError("no Elasticsearch URL given")
    options: dict[str, Any] = {
        "request_timeout": 30.0,
        "max_retries": 3,
        "retry_on_timeout": True,
    }
    options.update(opts)
    return AsyncElasticsearch(hosts, **options)


def _check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"invalid index prefix {prefix!r}: lowercase letters, digits, '_', '.', '-'; "
            "starting with a letter or digit"
        )
    return prefix


def _check_kind(kind: str) -> str:
    if not KIND_PATTERN.fullmatch(kind):
        raise ValueError(f"invalid record kind {kind!r}: {KIND_RULE}")
    return kind


def index_template(
    prefix: str = DEFAULT_PREFIX, *, replicas: int | None = None, lifecycle: str | None = None,
) -> dict[str, Any]:
    """The body of the composable index template ``<prefix>`` for ``<prefix>-*``.

    Pass it as keyword arguments to ``indices.put_index_template(name=prefix, ...)``.
    ``replicas`` sets ``number_of_replicas`` (0 keeps a one-node cluster green);
    ``None`` leaves the cluster's default. ``lifecycle`` names the ILM policy of new
    indices (only where Elasticsearch has ILM: others refuse the setting).
    """
    _check_prefix(prefix)
    settings: dict[str, Any] = {"number_of_shards": 1}
    if replicas is not None:
        settings["number_of_replicas"] = replicas
    if lifecycle is not None:
        settings["lifecycle"] = {"name": lifecycle}
    properties: dict[str, Any] = {
        name: {"type": "keyword"} for name in (*KEYWORD_FIELDS, *DEAD_LETTER_KEYWORD_FIELDS)
    }
    properties.update(
        {
            "error": {"type": "keyword", "ignore_above": ERROR_IGNORE_ABOVE},
            "value": {"type": "double"},
            "@timestamp": {"type": "date", "format": _DATE_FORMAT},
            "ingested_at": {"type": "date", "format": _DATE_FORMAT},
            "tags": {"type": "object", "dynamic": True},
        }
    )
    return {
        "index_patterns": [f"{prefix}-*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "settings": {"index": settings},
            "mappings": {
                # Tag names are open-ended; ``flattened`` would be the natural type but
                # osmem rejects it, and per-tag keywords query the same way.
                "dynamic_templates": [
                    {
                        "tags_as_keywords": {
                            "path_match": "tags.*",
                            "mapping": {"type": "keyword", "ignore_above": 1024},
                        }
                    }
                ],
                "properties": properties,
            },
        },
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "sluice", "version": TEMPLATE_VERSION},
    }


def lifecycle_policy_name(prefix: str) -> str:
    return f"{_check_prefix(prefix)}-retention"


def lifecycle_policy(retention_days: int) -> dict[str, Any]:
    """The ILM policy: indices are deleted ``retention_days`` after their creation
    (0: kept for ever, the policy has no delete phase)."""
    phases: dict[str, Any] = {"hot": {"min_age": "0ms", "actions": {}}}
    if retention_days > 0:
        phases["delete"] = {"min_age": f"{retention_days}d", "actions": {"delete": {}}}
    return {"phases": phases, "_meta": {"managed_by": "sluice", "retention_days": retention_days}}


async def ensure_lifecycle_policy(
    client: AsyncElasticsearch, prefix: str, retention_days: int
) -> str | None:
    """Install the ILM policy ``<prefix>-retention``; its name, or None when this
    Elasticsearch has no ILM (then ``sluice retention`` must delete old indices)."""
    name = lifecycle_policy_name(prefix)
    try:
        await client.ilm.put_lifecycle(name=name, policy=lifecycle_policy(retention_days))
    except (ApiError, TransportError) as exc:
        fault = request_fault(exc, f"cannot install ILM policy {name!r}", writing=False)
        if fault.unreachable:
            raise store_error(exc, f"cannot install ILM policy {name!r}") from exc
        # 400 "no handler found" (osmem), 404/405, no privilege for ILM, or a cluster
        # without the feature: retention falls back to deleting by name.
        log.warning(
            "ilm_unavailable", error=fault.detail[:300],
            note="no index lifecycle here: run `sluice retention` (the compose service "
            "`retention` does, daily) to delete daily indices older than retention_days",
        )
        return None
    return name


async def _installed_version(client: AsyncElasticsearch, prefix: str) -> int | None:
    """The ``version`` of the installed template ``<prefix>`` (0 without one); None
    when there is no such template."""
    try:
        found = await client.indices.get_index_template(name=prefix)
    except ApiError as exc:
        if exc.meta.status == 404:
            return None
        raise
    for entry in found.body.get("index_templates", []):
        if entry.get("name") == prefix:
            version = entry.get("index_template", {}).get("version")
            return version if isinstance(version, int) else 0
    return None


async def ensure_template(
    client: AsyncElasticsearch, prefix: str = DEFAULT_PREFIX, *, replicas: int | None = None,
    retention_days: int | None = None,
) -> None:
    """Install the template ``<prefix>`` unless one of the same or a newer version is
    there; with ``retention_days``, the ILM policy first (where there is ILM).

    Safe to call from every process at startup. Indices created before it keep their
    mapping; only new daily indices pick up a change. Check and write are two requests:
    when an older process wrote in between, the newer one finds it on its re-read and
    writes again, so the newest version is what stays.
    """
    context = f"cannot install index template {prefix!r}"
    try:
        lifecycle = None
        if retention_days is not None:
            lifecycle = await ensure_lifecycle_policy(client, prefix, retention_days)
        body = index_template(prefix, replicas=replicas, lifecycle=lifecycle)
        for _ in range(3):
            installed = await _installed_version(client, prefix)
            if installed is not None and installed >= TEMPLATE_VERSION:
                if installed > TEMPLATE_VERSION:
                    log.info("template_newer_kept", template=prefix, installed=installed,
                             ours=TEMPLATE_VERSION)
                return
            await client.indices.put_index_template(name=prefix, **body)
            log.info("template_installed", template=prefix, version=TEMPLATE_VERSION,
                     replaced=installed, lifecycle=lifecycle)
    except (ApiError, TransportError) as exc:
        raise store_error(exc, context) from exc


@functools.lru_cache(maxsize=256)
def _day_suffix(day: int) -> str:
    try:
        date = _EPOCH + _dt.timedelta(days=day)
    except OverflowError as exc:
        raise ValueError(f"timestamp out of range (day {day} since 1970)") from exc
    return date.strftime("%Y.%m.%d")


def index_name(prefix: str, kind: str, ts_ms: float) -> str:
    """The daily index for a record of ``kind`` at ``ts_ms`` (epoch milliseconds, UTC)."""
    try:
        day = int(ts_ms // MS_PER_DAY)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"timestamp {ts_ms!r} is not a finite number of milliseconds") from exc
    return f"{_check_prefix(prefix)}-{_check_kind(kind)}-{_day_suffix(day)}"


def index_pattern(prefix: str = DEFAULT_PREFIX, kind: str = "*") -> str:
    """The pattern matching every daily index of ``kind`` (``"*"``: of every kind)."""
    _check_prefix(prefix)
    if kind != "*":
        _check_kind(kind)
    return f"{prefix}-{kind}-*"
