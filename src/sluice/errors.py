"""Every error sluice raises on purpose.

The tree, so callers know what to catch::

    SluiceError
    ├── ConfigError            bad settings or an unknown plugin name; stops startup
    ├── TlsError               a TLS failure no retry can fix (unknown CA, wrong name, expired)
    ├── ProtocolError          a peer broke wire protocol v1 (carries the error ``code``)
    ├── ClientRefused          the server refused a client for good (TLS or authentication)
    ├── RecordError            one record was rejected by a parser (carries ``reason``)
    ├── BrokerError            RabbitMQ trouble
    │   ├── BrokerUnavailable  no usable link right now; retry later
    │   └── PublishRejected    the broker refused or could not route a message
    └── IndexingError          Elasticsearch trouble
        └── StoreUnavailable   429, 5xx, timeouts, refused connections; retry later

Low-level exceptions are wrapped with ``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ClientRefused",
    "ConfigError",
    "IndexingError",
    "ProtocolError",
    "PublishRejected",
    "RecordError",
    "SluiceError",
    "StoreUnavailable",
    "TlsError",
]


class SluiceError(Exception):
    """Base of every error sluice raises on purpose."""


class ConfigError(SluiceError):
    """Settings that cannot work, found at startup."""


class TlsError(SluiceError):
    """A TLS handshake failed for a reason retrying cannot fix: the peer's certificate is
    signed by an unknown CA, names another host or has expired, our certificate was
    refused, or the peer does not speak TLS. The message says which."""


class ProtocolError(SluiceError):
    """A violation of wire protocol v1.

    ``code`` is one of the error codes in ``docs/protocol.md`` and is what the server
    sends back in its ``error`` frame.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ClientRefused(SluiceError):
    """The server refused this client for a reason no retry fixes: TLS verification or
    authentication failed. The message is what the client's streams were told."""


class RecordError(SluiceError):
    """A parser rejected one record; ``reason`` is a short machine-readable slug."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message or reason


class BrokerError(SluiceError):
    """RabbitMQ could not do what was asked."""


class BrokerUnavailable(BrokerError):
    """There is no working link to RabbitMQ at the moment."""


class PublishRejected(BrokerError):
    """RabbitMQ nacked a publish or returned it as unroutable.

    ``code`` is ``"refused"`` or ``"unroutable"``, as sent to clients in ``nack`` frames.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IndexingError(SluiceError):
    """Elasticsearch could not index what was asked."""


class StoreUnavailable(IndexingError):
    """Elasticsearch is unreachable, overloaded or timing out; retry with backoff."""
