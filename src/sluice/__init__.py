"""sluice: a streaming-ingest pipeline.

Clients stream records in length-prefixed msgpack frames over persistent TCP connections
(:mod:`sluice.protocol`); stateless servers publish each batch to RabbitMQ with publisher
confirms (:mod:`sluice.server`); parser workers parse records with pluggable parsers and
bulk-index them into Elasticsearch (:mod:`sluice.parser`); an aiohttp API serves
aggregations and a dashboard (:mod:`sluice.api`).
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    IndexingError,
    ProtocolError,
    PublishRejected,
    RecordError,
    SluiceError,
    StoreUnavailable,
)

try:
    __version__: str = _metadata.version("sluice")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "IndexingError",
    "ProtocolError",
    "PublishRejected",
    "RecordError",
    "SluiceError",
    "StoreUnavailable",
    "__version__",
]
