"""One client connection: hello, batches, acks, pings, bye, idle timeout, error frames.

The connection reads frames in one task. Each batch is handed to the publisher and
counted in flight until it is settled; acks and nacks are written from the settle
callback, so they go out in confirm order, which need not be the order batches arrived
(clients match them by ``seq``). With ``max_inflight`` batches unsettled the reader still
reads, so pings are answered and a bye, end of stream or reset is seen; but a batch read
then is held, and nothing more is read until a slot frees. So a client outrunning the
broker is held back by TCP instead of filling the server's memory: per connection the
server holds at most one frame being read, the stream reader's small buffer,
``max_inflight`` payloads and the one held batch.

Across connections, the bodies of unsettled batches share one byte budget
(``max_inflight_bytes``, budget.py). A batch's length is taken from it before its body is
read (a frame over ``MAX_CONTROL_FRAME`` can only be a batch; a smaller batch is read
first and then held like a batch past ``max_inflight``), so at the budget a connection
stops reading exactly as at ``max_inflight``. Hello, ping and bye frames are capped at
``MAX_CONTROL_FRAME``.

When the client vanishes (reset, or the transport closed), nothing it is owed can be
delivered: its batches not yet written to RabbitMQ are abandoned at once, freeing their
payloads and the connection slot even while the broker is blocked. After a bye or end of
stream the acks still owed are awaited for at most ``idle_timeout``; what is unconfirmed
then is nacked ``unavailable``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

import msgpack

from ..errors import ProtocolError
from ..lifecycle import TaskOwner
from ..logs import RateLimitedLog, get_logger
from ..protocol import (
    HEADER_SIZE,
    MAX_CONTROL_FRAME,
    Batch,
    Bye,
    ErrorCode,
    Hello,
    Nack,
    NackCode,
    Ping,
    Pong,
    decode_body,
    encode,
    parse_client,
    read_body,
    read_header,
)
from .access import Grant, IngestAccess
from .budget import ByteBudget
from .metrics import ServerMetrics
from .publisher import UNAVAILABLE, Publication, Publisher
from .streams import close_stream, close_with_error

__all__ = ["Connection", "ConnectionContext", "encode_ack"]

log = get_logger(__name__)


IDLE = "idle"
SHUTDOWN = "shutdown"

_packer = msgpack.Packer(use_bin_type=True)
_ACK_MAP = b"\x82\xa4type\xa3ack\xa3seq"
_FRAME_TYPES = {Batch: "batch", Ping: "ping", Bye: "bye", Hello: "hello"}


def encode_ack(seq: int) -> bytes:
    """The ack frame for ``seq``, without building a dict: one is sent per batch."""
    body: bytes = _ACK_MAP + _packer.pack(seq)
    return len(body).to_bytes(HEADER_SIZE, "big") + body


@dataclass(frozen=True)
class ConnectionContext:
    """What every connection of one server shares."""

    max_frame: int
    max_inflight: int
    idle_timeout: float
    welcome: bytes
    publisher: Publisher
    metrics: ServerMetrics
    rejections: RateLimitedLog
    budget: ByteBudget
    #: authentication and per-kind authorization; None = open (no token, no client cert)
    access: Optional[IngestAccess] = None


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ConnectionContext
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._transport = writer.transport
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._tasks = TaskOwner("connection")
        #: seq -> its publication (None while publish() runs or when it settled at once)
        self._pending: dict[int, Optional[Publication]] = {}
        #: seq -> bytes it holds of the server's budget (every seq in _pending has one)
        self._sizes: dict[int, int] = {}
        #: bytes taken for the frame being read or held, not yet handed to a batch
        self._held = 0
        #: waiting for the budget: the client is not idle, it is held back
        self._waiting = False
        self._slot: Optional[asyncio.Future[None]] = None
        self._drained: Optional[asyncio.Future[None]] = None
        self._read_task: Optional[asyncio.Task[Optional[ProtocolError]]] = None
        self._idle_handle: Optional[asyncio.TimerHandle] = None
        self._last_seen = self._loop.time()
        self._stop_reason: Optional[str] = None
        self._stop_deadline: Optional[float] = None
        # the read ended because the connection broke: nothing can be delivered any more
        self._broken = False
        # set once the last frame (error or not) is written: nothing may follow it
        self._sealed = False
        self._frame_size = 0
        self.client_id = ""
        self._grant: Optional[Grant] = None
        self.peer: Any = writer.get_extra_info("peername")

    @property
    def inflight(self) -> int:
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            if self._stop_reason is None:
                self._arm_idle(self._ctx.idle_timeout)
                self._read_task = self._tasks.spawn(self._read())
                # asyncio.wait does not cancel the reader when serve() itself is cancelled;
                # the finally below does, through the TaskOwner.
                await asyncio.wait({self._read_task})
            await self._conclude()
        finally:
            self._disarm_idle()
            await self._tasks.close()
            self._abandon()
            if not self._transport.is_closing():
                self._transport.abort()

    def stop(self, reason: str, deadline: Optional[float] = None) -> None:
        """Stop reading: ``idle`` closes at once, ``shutdown`` first waits (until
        ``deadline``, loop time) for the batches in flight and sends their acks."""
        if reason == SHUTDOWN:
            self._stop_deadline = deadline
            if deadline is not None and self._drained is not None:
                self._loop.call_at(deadline, self._release_drain)
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._read_task is not None and not self._read_task.done():
            self._read_task.cancel()

    async def _conclude(self) -> None:
        task = self._read_task
        if task is None or task.cancelled():
            if self._stop_reason == IDLE:
                await self._fail(ErrorCode.IDLE_TIMEOUT,
                                 f"no frame received for {self._ctx.idle_timeout:g} s")
            else:
                await self._drain("the server shut down before RabbitMQ confirmed this batch; "
                                  "resend")
                await self._fail(ErrorCode.SHUTTING_DOWN,
                                 "the server is shutting down; reconnect (possibly elsewhere)")
            return
        error = task.result()
        if error is None and (self._broken or self._transport.is_closing()):
            # reset or closed underneath: no ack can reach the client; free what it pinned
            self._sealed = True
            self._abandon()
        elif error is None:  # bye or end of stream: settle what is owed (bounded), then close
            await self._drain(f"RabbitMQ did not confirm this batch within "
                              f"{self._ctx.idle_timeout:g} s of the bye; resend",
                              self._loop.time() + self._ctx.idle_timeout)
            self._sealed = True
            await close_stream(self._writer)
        else:
            await self._fail(error.code, error.message)

    async def _fail(self, code: str, message: str) -> None:
        self._sealed = True
        self._ctx.metrics.errors.labels(code).inc()
        self._ctx.rejections.warning(
            code, "connection_rejected", code=code, reason=message, peer=str(self.peer),
            client_id=self.client_id,
        )
        await close_with_error(self._reader, self._writer, code, message)

    async def _drain(self, reason: str, deadline: Optional[float] = None) -> None:
        """Wait for every batch in flight to be settled, or until ``deadline`` or the
        shutdown deadline (loop time); what is still unconfirmed then is nacked
        ``unavailable`` with ``reason``, and its publishing abandoned."""
        if self._pending:
            self._drained = self._loop.create_future()
            handles = [self._loop.call_at(when, self._release_drain)
                       for when in (deadline, self._stop_deadline) if when is not None]
            try:
                await self._drained
            finally:
                self._drained = None
                for handle in handles:
                    handle.cancel()
        for seq in sorted(self._pending):
            self._send_nack(seq, UNAVAILABLE, reason)
        self._abandon()

    def _abandon(self) -> None:
        """Forget every batch still in flight: publishes not yet written to RabbitMQ are
        cancelled (their payloads freed); written ones settle later, unobserved."""
        if self._pending:
            publications = [p for p in self._pending.values() if p is not None]
            self._pending.clear()
            self._ctx.budget.release(sum(self._sizes.values()))
            self._sizes.clear()
            self._ctx.publisher.abandon(publications)

    def _release_drain(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- idle timeout ---------------------------------------------------------------------

    def _arm_idle(self, delay: float) -> None:
        self._idle_handle = self._loop.call_later(delay, self._check_idle)

    def _disarm_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _check_idle(self) -> None:
        # A timer re-armed only when it fires, instead of a timeout per read: the hot path
        # just stores a timestamp. A client waiting for our acks is not idle.
        now = self._loop.time()
        if self._pending or self._waiting:
            self._last_seen = now
        remaining = self._last_seen + self._ctx.idle_timeout - now
        if remaining > 0:
            self._arm_idle(remaining)
        else:
            self._idle_handle = None
            self.stop(IDLE)

    # -- reading --------------------------------------------------------------------------

    async def _next(self) -> Any:
        length = await read_header(self._reader, self._ctx.max_frame)
        if length is None:
            return None
        self._last_seen = self._loop.time()
        try:
            if length > MAX_CONTROL_FRAME:
                # Only a batch may be this big: its bytes are taken before its body is read.
                await self._take(length)
            body = await read_body(self._reader, length)
            message = parse_client(decode_body(body))
            if length > MAX_CONTROL_FRAME and type(message) is not Batch:
                raise ProtocolError(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"a {_FRAME_TYPES[type(message)]} frame may be at most {MAX_CONTROL_FRAME} "
                    f"bytes, not {length}")
        except BaseException:
            self._release_held()
            raise
        self._frame_size = length
        self._ctx.metrics.frames.labels(_FRAME_TYPES[type(message)]).inc()
        return message

    async def _read(self) -> Optional[ProtocolError]:
        """Read until bye or end of stream (None), or a protocol violation (returned, not
        raised: bad input is expected, and is logged rate-limited, not as a task failure)."""
        try:
            await self._read_loop()
        except ProtocolError as exc:
            return exc
        except (ConnectionError, OSError) as exc:  # the client vanished; it owes us nothing
            self._broken = True
            log.debug("connection_broken", peer=str(self.peer), client_id=self.client_id,
                      error=repr(exc))
        return None

    async def _read_loop(self) -> None:
        message = await self._next()
        if message is None:
            return
        if not isinstance(message, Hello):
            raise ProtocolError(ErrorCode.UNEXPECTED_TYPE,
                                f"the first frame must be hello, not {_FRAME_TYPES[type(message)]}")
        self.client_id = message.client_id
        self._admit(message)
        self._writer.write(self._ctx.welcome)

        max_inflight = self._ctx.max_inflight
        writer = self._writer
        while True:
            # A client that does not read its acks is held back too.
            await writer.drain()
            message = await self._next()
            if message is None:
                return
            kind = type(message)
            if kind is Batch and self._grant is not None and not self._grant.allows(message.kind):
                self._forbid(message)
            elif kind is Batch:
                # At the limit this one batch is held, and nothing more is read, until a
                # slot frees; pings, bye and end of stream are still seen before that.
                try:
                    while len(self._pending) >= max_inflight:
                        self._slot = self._loop.create_future()
                        await self._slot
                    if not self._held:
                        await self._take(self._frame_size)
                    self._batch(message)
                finally:
                    self._release_held()
            elif kind is Ping:
                self._pong(message)
            elif kind is Bye:
                return
            else:
                raise ProtocolError(ErrorCode.UNEXPECTED_TYPE, "hello may be sent only once")

    def _admit(self, hello: Hello) -> None:
        access = self._ctx.access
        if access is not None:
            self._grant = access.admit(hello.token, self._writer.get_extra_info("peercert"))
            if self._grant is not None:
                log.debug("client_admitted", peer=str(self.peer), client_id=self.client_id,
                          principal=self._grant.principal.name)

    def _forbid(self, batch: Batch) -> None:
        assert self._grant is not None
        self._ctx.rejections.warning(
            NackCode.FORBIDDEN, "batch_forbidden", principal=self._grant.principal.name, kind=batch.kind,
            client_id=self.client_id, peer=str(self.peer),
        )
        self._send_nack(batch.seq, NackCode.FORBIDDEN,
                        f"{self._grant.principal.name} may not send records of kind {batch.kind!r}")

    def _batch(self, batch: Batch) -> None:
        seq = batch.seq
        if seq in self._pending:
            raise ProtocolError(ErrorCode.DUPLICATE_SEQ,
                                f"batch seq {seq} is still in flight on this connection")
        self._pending[seq] = None
        self._sizes[seq], self._held = self._held, 0
        metrics = self._ctx.metrics
        metrics.batches.inc()
        metrics.records.inc(batch.count)
        metrics.bytes.inc(len(batch.payload))
        publication = self._ctx.publisher.publish(batch, self.client_id, self._settled)
        if publication is not None and seq in self._pending:
            self._pending[seq] = publication

    async def _take(self, size: int) -> None:
        """Take ``size`` bytes of the server's budget for the frame being read."""
        budget = self._ctx.budget
        if not budget.try_take(size):
            self._waiting = True
            try:
                await budget.take(size)
            finally:
                self._waiting = False
        self._held = size

    def _release_held(self) -> None:
        if self._held:
            self._ctx.budget.release(self._held)
            self._held = 0

    def _pong(self, ping: Ping) -> None:
        try:
            frame = encode(Pong(ping.nonce), self._ctx.max_frame)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "ping.nonce cannot be echoed") from exc
        self._writer.write(frame)

    # -- settling -------------------------------------------------------------------------

    def _settled(self, seq: int, code: Optional[str], message: str) -> None:
        if seq not in self._pending:  # already nacked at a deadline, or abandoned
            return
        del self._pending[seq]
        self._ctx.budget.release(self._sizes.pop(seq))
        if code is None:
            if self._writable():
                self._transport.write(encode_ack(seq))
                self._ctx.metrics.acks.inc()
        else:
            self._send_nack(seq, code, message)
        slot = self._slot
        if slot is not None and not slot.done():
            slot.set_result(None)
        if not self._pending:
            self._release_drain()

    def _writable(self) -> bool:
        return not self._sealed and not self._transport.is_closing()

    def _send_nack(self, seq: int, code: str, message: str) -> None:
        if self._writable():
            self._transport.write(encode(Nack(seq, code, message)))
            self._ctx.metrics.nacks.labels(code).inc()
