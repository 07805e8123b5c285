"""The server as one object: listener, connection limit, broker link, ops side port, and
graceful shutdown. Tests run it in-process; ``sluice server`` runs it until a signal.

Shutdown order matters: stop accepting, let every connection finish its in-flight
confirms and send their acks (bounded by ``drain_timeout``), close the connections, and
only then drop the publisher and the broker link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Optional

from aiormq.abc import AbstractChannel
from prometheus_client import CollectorRegistry

from .. import tls
from ..amqp import BrokerLink
from ..auth import TokenFile
from ..lifecycle import TaskOwner
from ..logs import RateLimitedLog, get_logger
from ..ops import OpsServer, service_registry
from ..protocol import ErrorCode, Welcome, encode
from ..topology import Topology
from .access import IngestAccess
from .budget import ByteBudget
from .connection import SHUTDOWN, Connection, ConnectionContext
from .metrics import ServerMetrics
from .publisher import Publisher
from .settings import ServerSettings
from .streams import close_with_error

__all__ = ["MAX_REFUSING", "READ_BUFFER_LIMIT", "IngestServer"]

log = get_logger(__name__)

#: the stream reader pauses the socket past twice this; it bounds unread bytes per connection
READ_BUFFER_LIMIT = 64 * 1024
#: connections being refused politely (error frame, then a bounded linger) at once; past
#: this, a refused connection is reset at once, so a flood of connects costs no memory
MAX_REFUSING = 100
#: time allowed, past the drain deadline, for connections to send their last frame and close
CLOSE_GRACE = 3.0
#: seconds a client gets to finish its TLS handshake
TLS_HANDSHAKE_TIMEOUT = 10.0


class IngestServer:
    """The ingest service (see :class:`sluice.lifecycle.Service`)."""

    name = "server"

    def __init__(self, settings: ServerSettings, registry: Optional[CollectorRegistry] = None) -> None:
        self.settings = settings
        self.registry = registry or service_registry()
        self.topology = Topology(namespace=settings.namespace, delivery_limit=settings.delivery_limit,
                                 max_length_bytes=settings.queue_max_bytes)
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._tasks = TaskOwner("server")
        self._refusing = 0
        self.budget = ByteBudget(settings.max_inflight_bytes)
        self.link = BrokerLink(settings.amqp_url, setup=self._declare, on_lost=self._link_lost,
                               name="server")
        self.metrics = ServerMetrics(
            self.registry,
            connections=lambda: len(self._connections),
            inflight=lambda: self.publisher.inflight,
            broker_up=lambda: self.link.is_up,
            inflight_bytes=lambda: self.budget.used,
            budget_waiting=lambda: self.budget.waiting,
        )
        self.publisher = Publisher(self.link, self.topology, settings.instance_id, self.metrics)
        self._context = ConnectionContext(
            max_frame=settings.max_frame,
            max_inflight=settings.max_inflight,
            idle_timeout=settings.idle_timeout,
            welcome=encode(Welcome(server_id=settings.instance_id, max_frame=settings.max_frame,
                                   max_inflight=settings.max_inflight)),
            publisher=self.publisher,
            metrics=self.metrics,
            rejections=RateLimitedLog(log),
            budget=self.budget,
            access=_access(settings),
        )
        self._ssl = _ssl_context(settings)
        self.ops = OpsServer(self.registry, ready=lambda: {"broker": self.link.is_up},
                             host=settings.host, port=settings.http_port)
        self._listener: Optional[asyncio.AbstractServer] = None
        self._stopping = False
        #: bound ports (useful with port 0); None until started
        self.port: Optional[int] = None
        self.http_port: Optional[int] = None
        #: never set: a server serves until it is stopped
        self.done = asyncio.Event()

    @property
    def failed(self) -> asyncio.Event:
        """Set when the broker link failed for good (e.g. a queue with other arguments)."""
        return self.link.failed

    @property
    def failure(self) -> Optional[BaseException]:
        return self.link.failure

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def refusing(self) -> int:
        """Refused connections still being closed politely (at most MAX_REFUSING)."""
        return self._refusing

    async def _declare(self, channel: AbstractChannel) -> None:
        await self.topology.declare(channel, self.settings.kinds)

    def _link_lost(self, reason: BaseException) -> None:
        self.publisher.link_lost(reason)

    async def start(self) -> None:
        self.link.start()
        self._listener = await asyncio.start_server(
            self._accept, self.settings.host, self.settings.port, limit=READ_BUFFER_LIMIT,
            backlog=min(4096, self.settings.max_connections),
            **self._tls_options(),
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        await self.ops.start()
        self.http_port = self.ops.bound_port
        log.info("server_listening", host=self.settings.host, port=self.port,
                 http_port=self.http_port, exchange=self.topology.exchange,
                 kinds=list(self.settings.kinds), tls=self._ssl is not None,
                 client_certificates=bool(self.settings.tls_client_ca),
                 tokens=bool(self.settings.token_file))

    def _tls_options(self) -> dict[str, Any]:
        if self._ssl is None:
            return {}
        return {"ssl": self._ssl, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: each connection's task is spawned here so that
        # it belongs to this server's TaskOwner.
        self.metrics.connections_total.inc()
        if self._stopping:
            self._reject(reader, writer, ErrorCode.SHUTTING_DOWN, "the server is shutting down")
        elif len(self._connections) >= self.settings.max_connections:
            self._reject(reader, writer, ErrorCode.TOO_MANY_CONNECTIONS,
                         f"this server already serves {self.settings.max_connections} "
                         "connections; retry later or elsewhere")
        else:
            connection = Connection(reader, writer, self._context)
            task = self._tasks.spawn(connection.serve())
            self._connections[connection] = task
            task.add_done_callback(lambda _: self._connections.pop(connection, None))

    def _reject(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        self._context.rejections.warning(code, "connection_rejected", code=code, reason=message,
                                         peer=str(writer.get_extra_info("peername")))
        if self._refusing >= MAX_REFUSING:
            writer.transport.abort()  # a flood: no error frame, no linger, nothing held
            return
        try:
            task = self._tasks.spawn(close_with_error(reader, writer, code, message))
        except RuntimeError:  # closing down: no time for politeness
            writer.transport.abort()
            return
        self._refusing += 1
        task.add_done_callback(self._refused)

    def _refused(self, _: object) -> None:
        self._refusing -= 1

    async def shutdown(self, drain_timeout: Optional[float] = None) -> dict[str, Any]:
        """Stop accepting, drain in-flight confirms (bounded), close every connection;
        ``drained`` is False when connections were still open at the deadline."""
        if self._stopping:
            return {"drained": True}
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        drain = self.settings.drain_timeout if drain_timeout is None else drain_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain
        connections = dict(self._connections)
        log.info("server_draining", connections=len(connections),
                 inflight=self.publisher.inflight, drain_timeout=drain)
        for connection in connections:
            connection.stop(SHUTDOWN, deadline)
        pending: set[asyncio.Task[None]] = set()
        if connections:
            _, pending = await asyncio.wait(connections.values(), timeout=drain + CLOSE_GRACE)
        await self.close()
        return {"drained": not pending}

    async def close(self) -> None:
        """Stop at once: connections are cut, outstanding publishes dropped."""
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        await self._tasks.close()
        await self.publisher.close()
        await self.link.close()
        await self.ops.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 1)
            self._listener = None


def _ssl_context(settings: ServerSettings) -> Optional[ssl.SSLContext]:
    if not settings.tls_cert:
        return None
    return tls.server_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def _access(settings: ServerSettings) -> Optional[IngestAccess]:
    tokens = TokenFile(settings.token_file) if settings.token_file else None
    access = IngestAccess(tokens, client_certificates=bool(settings.tls_client_ca))
    return access if access.required else None
