"""One persistent connection to a server, kept up for as long as there is work.

A :class:`Stream` says hello, learns the server's ``max_frame`` and ``max_inflight`` from
its welcome, then pipelines batches from the shared feed, at most ``max_inflight - 1``
unacked at a time (the free slot keeps the server reading, so it always answers a ping,
even while RabbitMQ holds its confirms back). Every batch stays with the stream until it
is acked:

- a ``nack`` stops new sends; the stream waits for the acks still owed, closes, backs off,
  reconnects (perhaps to another server behind the balancer) and resends;
- a broken connection moves every unacked batch back to the resend list, same payload
  bytes, same record ids; the server may have published some of them already, which is
  the at-least-once half of the contract, and the ids let the store deduplicate;
- so does a server that goes silent: with batches in flight (or a ping unanswered) and
  nothing received for ``silence_timeout`` (3 ping intervals), the session is over;
- transient failures (an ``unavailable`` nack: RabbitMQ down or restarting; a ``refused``
  nack: a queue at its ``x-max-length-bytes`` rejecting publishes until parsers drain it; a
  broken, refused or silent connection; no connection at all) are retried with backoff for as
  long as ``give_up_after`` seconds allow, counted from a batch's first send: a batch
  unacked that long is given up and counted as failed, and so is everything the stream
  holds once it has gone that long without an ack (0 = retry forever);
- other nacks (a code this client does not know) count against
  ``max_tries``; ``unroutable`` (no queue is bound for the kind: a resend cannot help)
  gives a batch up after at most :data:`UNROUTABLE_TRIES` of them;
- a batch whose frame exceeds the server's ``max_frame`` is split into smaller batches.

``seq`` numbers are per connection and never reused on it, so a resend always has a fresh
``seq`` and can never be mistaken for a duplicate of a batch still in flight. Each
connection says hello with its own ``client_id`` (the stream's id plus ``.<session>``),
so the server's AMQP ``message_id``, ``<client_id>:<seq>``, never names two batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections import deque
from typing import Optional

from ..backoff import Backoff
from ..errors import ProtocolError, TlsError
from ..lifecycle import TaskOwner
from ..logs import RateLimitedLog, get_logger
from ..protocol import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MAX_CLIENT_ID_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ErrorCode,
    ErrorFrame,
    Hello,
    Nack,
    NackCode,
    Ping,
    Pong,
    Welcome,
    decode_body,
    encode,
    encode_batch,
    parse_server,
    read_frame,
)
from .batch import OutBatch, split_payload
from .feed import Feed
from .report import Stats
from .security import Credentials, fatal_failure

__all__ = ["TRANSIENT_NACKS", "UNROUTABLE", "UNROUTABLE_TRIES", "Outcome", "Stream", "session_client_id"]

log = get_logger(__name__)

#: replies from a server are small; this only bounds what a broken server can make us buffer
_REPLY_MAX_FRAME = DEFAULT_MAX_FRAME
#: how long to wait for the acks still owed after a nack, and for the close after ``bye``
_SETTLE_TIMEOUT = 10.0
#: the transport buffers this much before ``drain`` blocks, so batches pipeline freely
_WRITE_BUFFER = 4 * 1024 * 1024
#: nack codes meaning "not now" (RabbitMQ down or restarting, or a full queue refusing
#: publishes until it drains): retried until give_up_after, never counted against max_tries
TRANSIENT_NACKS = frozenset({NackCode.UNAVAILABLE, NackCode.REFUSED})
UNROUTABLE = NackCode.UNROUTABLE
#: nothing is bound for the batch's kind; resending will not bind anything, so give up soon
UNROUTABLE_TRIES = 3


def session_client_id(base: str, session: int) -> str:
    """``<base>.<session>``, ``base`` cut (on a UTF-8 boundary) to keep it within the
    protocol's limit of :data:`~sluice.protocol.MAX_CLIENT_ID_BYTES`."""
    suffix = f".{session}"
    room = MAX_CLIENT_ID_BYTES - len(suffix)
    clipped = base.encode("utf-8")[:room].decode("utf-8", errors="ignore")
    return clipped + suffix


class Outcome(enum.Enum):
    FINISHED = "finished"        # input done, everything acked, bye said
    NACKED = "nacked"            # the server refused batches; reconnect and resend
    LOST = "lost"                # the connection broke or the server misbehaved
    REFUSED = "refused"          # no welcome (error frame, bad reply, closed)
    UNREACHABLE = "unreachable"  # no TCP connection
    FATAL = "fatal"              # TLS or authentication failed: retrying cannot help


class Stream:
    def __init__(
        self, index: int, host: str, port: int, client_id: str, feed: Feed, stats: Stats, *,
        max_tries: int, give_up_after: float = 600.0, backoff: Optional[Backoff] = None,
        connect_timeout: float = 10.0, ping_interval: float = 5.0,
        silence_timeout: Optional[float] = None, credentials: Optional[Credentials] = None,
    ) -> None:
        self.index = index
        self._host = host
        self._port = port
        self._client_id = client_id
        self._feed = feed
        self._stats = stats
        self._max_tries = max_tries
        self._give_up_after = give_up_after
        self._backoff = backoff or Backoff(base=0.1, cap=30.0)
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._silence_timeout = silence_timeout if silence_timeout is not None else 3 * ping_interval
        self._credentials = credentials or Credentials()
        self._retry: deque[OutBatch] = deque()
        self._inflight: dict[int, OutBatch] = {}
        self._input_done = False
        self._seq = 0
        self._limit = 1
        self._max_frame = DEFAULT_MAX_FRAME
        self._draining = False
        self._bye_sent = False
        self._last_write = 0.0
        self._heard_at = 0.0       # last frame received, or when we began waiting for one
        self._ping_pending = False
        self._slot = asyncio.Event()
        self._acks_this_session = 0
        self._sessions = 0
        self._warn = RateLimitedLog(log, interval=5.0)
        self.gave_up = False
        #: why the stream stopped for good (TLS or authentication); None otherwise
        self.fatal: Optional[str] = None
        self.server_ids: list[str] = []

    # -- the reconnect loop ----------------------------------------------------------------

    def held(self) -> int:
        """Records this stream holds unacked (to resend or in flight)."""
        return sum(b.count for b in self._retry) + sum(b.count for b in self._inflight.values())

    def _complete(self) -> bool:
        return self._input_done and not self._retry and not self._inflight

    async def run(self) -> None:
        """Stream until the feed ends and everything is acked, or until giving up."""
        failures = 0
        outage_since = 0.0  # when the current run of sessions without an ack began
        while True:
            outcome = await self._session()
            if outcome is Outcome.FINISHED:
                return
            if outcome is Outcome.FATAL:
                self._give_up_all(outcome, 0.0)
                return
            now = time.monotonic()
            if self._acks_this_session:
                failures = 0
                self._backoff.reset()
            if failures == 0:
                outage_since = now  # a run of sessions without an ack may start here
            if not self._acks_this_session:
                failures += 1
            if self._complete():
                return
            # The outage is as old as its first failure, or the oldest batch still unacked.
            since = min([outage_since, *(b.first_sent for b in self._retry if b.first_sent)])
            window = self._give_up_after
            if window and not self._acks_this_session and now - since >= window:
                self._give_up_all(outcome, now - since)
                return
            delay = self._backoff.next_delay()
            if window:
                delay = min(delay, max(0.0, since + window - now))
            self._warn.warning(
                f"reconnect-{outcome.value}", "stream_reconnecting", stream=self.index,
                outcome=outcome.value, attempt=failures, retry_in=round(delay, 3),
                unacked_records=self.held(),
            )
            self._stats.reconnects += 1
            await asyncio.sleep(delay)

    def _give_up_all(self, outcome: Outcome, waited: float) -> None:
        held = list(self._retry)
        self._retry.clear()
        self.gave_up = True
        records = sum(b.count for b in held)
        self._stats.gave_up += records
        log.error("stream_gave_up", stream=self.index, target=f"{self._host}:{self._port}",
                  waited_s=round(waited, 3), give_up_after=self._give_up_after,
                  last_outcome=outcome.value, failed_records=records)

    # -- one connection --------------------------------------------------------------------

    async def _session(self) -> Outcome:
        self._acks_this_session = 0
        self._sessions += 1
        target = f"{self._host}:{self._port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, **self._credentials.connect_options()),
                self._connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            if self._fatal(fatal_failure(exc, target, self._credentials)):
                return Outcome.FATAL
            self._warn.warning("connect", "connect_failed", stream=self.index,
                               target=f"{self._host}:{self._port}", error=repr(exc))
            return Outcome.UNREACHABLE
        owner = TaskOwner(f"stream-{self.index}")
        try:
            try:
                welcome = await asyncio.wait_for(self._handshake(reader, writer), self._connect_timeout)
            except (OSError, EOFError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    ProtocolError) as exc:
                if self._fatal(fatal_failure(exc, target, self._credentials)):
                    return Outcome.FATAL
                self._warn.warning("handshake", "handshake_failed", stream=self.index,
                                   error=repr(exc))
                return Outcome.REFUSED
            self._start_session(welcome, writer)
            sender = owner.spawn(self._send_loop(writer), name=f"stream-{self.index}-send")
            receiver = owner.spawn(self._receive_loop(reader, writer), name=f"stream-{self.index}-recv")
            keepalive = owner.spawn(self._keepalive(writer), name=f"stream-{self.index}-ping")
            done, _ = await asyncio.wait({sender, receiver, keepalive}, return_when=asyncio.FIRST_COMPLETED)
            if done == {sender} and sender.exception() is None and sender.result():
                # The sender is through (input ended, or a nack stopped it): the receiver
                # decides when the session is over, unless the server goes silent.
                done, _ = await asyncio.wait({receiver, keepalive}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done and receiver.exception() is None:
                return receiver.result()
            return Outcome.LOST
        finally:
            await owner.close()
            self._end_session()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _fatal(self, error: Optional[TlsError | ProtocolError]) -> bool:
        if error is None:
            return False
        self.fatal = str(error)
        log.error("stream_refused", stream=self.index, target=f"{self._host}:{self._port}",
                  error=self.fatal, retrying=False)
        return True

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Welcome:
        writer.write(encode(Hello(client_id=session_client_id(self._client_id, self._sessions),
                                  token=self._credentials.token)))
        body = await read_frame(reader, _REPLY_MAX_FRAME)
        if body is None:
            raise EOFError("the server closed the connection before its welcome"
                           + ("" if self._credentials.context else " (if it requires TLS, add --tls)"))
        msg = parse_server(decode_body(body))
        if isinstance(msg, ErrorFrame):
            raise ProtocolError(msg.code, msg.message)
        if not isinstance(msg, Welcome):
            raise ProtocolError(ErrorCode.UNEXPECTED_TYPE, f"expected welcome, got {type(msg).__name__}")
        if msg.version != PROTOCOL_VERSION:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"server speaks version {msg.version}")
        return msg

    def _start_session(self, welcome: Welcome, writer: asyncio.StreamWriter) -> None:
        # One slot left free: a server at its max_inflight stops reading, and would leave
        # our pings unanswered while RabbitMQ is slow to confirm.
        self._limit = max(1, welcome.max_inflight - 1)
        self._max_frame = max(1, welcome.max_frame)
        self._seq = 0
        self._draining = False
        self._bye_sent = False
        self._last_write = self._heard_at = time.monotonic()
        self._ping_pending = False
        self._slot.set()
        self.server_ids.append(welcome.server_id)
        transport = writer.transport
        with contextlib.suppress(Exception):  # not every transport takes limits
            transport.set_write_buffer_limits(high=_WRITE_BUFFER)
        log.info("stream_connected", stream=self.index, server_id=welcome.server_id,
                 max_inflight=welcome.max_inflight, max_frame=welcome.max_frame,
                 resending=sum(b.count for b in self._retry))

    def _end_session(self) -> None:
        # Unacked batches go first in line, oldest first, with their bytes unchanged.
        unacked = [self._inflight[seq] for seq in sorted(self._inflight)]
        self._inflight.clear()
        keep: list[OutBatch] = []
        now = time.monotonic()
        for batch in unacked:
            self._stats.inflight -= batch.count
            if self._exhausted(batch, now, None):
                continue
            keep.append(batch)
        self._retry.extendleft(reversed(keep))

    def _exhausted(self, batch: OutBatch, now: float, code: Optional[str]) -> bool:
        """Give ``batch`` up (and count it) if it is out of tries or out of time."""
        limit = min(self._max_tries, UNROUTABLE_TRIES) if code == UNROUTABLE else self._max_tries
        if code == NackCode.FORBIDDEN:
            limit = 1  # this client may not send the kind: resending cannot change that
        window = self._give_up_after
        if batch.refusals >= limit:
            why = "max_tries"
        elif window and batch.first_sent and now - batch.first_sent >= window:
            why = "give_up_after"
        else:
            return False
        self._stats.gave_up += batch.count
        log.error("batch_failed", stream=self.index, records=batch.count, reason=why, code=code,
                  tries=batch.tries, refusals=batch.refusals,
                  unacked_s=round(now - batch.first_sent, 3))
        return True

    # -- sending ---------------------------------------------------------------------------

    async def _send_loop(self, writer: asyncio.StreamWriter) -> bool:
        """Send until the input ends or a nack stops it (True), or a write fails (False)."""
        try:
            await self._send(writer)
        except (OSError, RuntimeError) as exc:  # uvloop raises RuntimeError on a closed transport
            self._warn.warning("write", "write_failed", stream=self.index, error=repr(exc))
            return False
        return True

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        while not self._draining:
            while len(self._inflight) >= self._limit:
                self._slot.clear()
                await self._slot.wait()
                if self._nacked():
                    return
            if self._retry:
                batch = self._retry.popleft()
            elif self._input_done:
                if self._complete():
                    self._say_bye(writer)
                return
            else:
                got = await self._feed.get()
                if got is None:
                    self._input_done = True
                    continue
                if self._nacked():
                    self._retry.appendleft(got)
                    return
                batch = got
            # From taking the batch to registering it in flight there is no await, so a
            # cancellation can never drop it.
            self._seq += 1
            frame = encode_batch(self._seq, batch.kind, batch.count, batch.payload)
            if len(frame) - HEADER_SIZE > self._max_frame:
                self._split(batch, len(frame))
                continue
            now = time.monotonic()
            if not self._inflight and not self._ping_pending:
                self._heard_at = now  # the silence clock starts with the first thing owed
            self._inflight[self._seq] = batch
            stats = self._stats
            if batch.tries:
                stats.resent += batch.count
            else:
                stats.sent += batch.count
                batch.first_sent = now
            stats.inflight += batch.count
            batch.tries += 1
            batch.sent_at = self._last_write = now
            writer.write(frame)
            await writer.drain()

    def _split(self, batch: OutBatch, frame_size: int) -> None:
        if batch.count <= 1:
            self._stats.gave_up += batch.count
            log.error("record_too_large", stream=self.index, frame_bytes=frame_size,
                      max_frame=self._max_frame)
            return
        parts = split_payload(batch.payload, max(2, math.ceil(frame_size / self._max_frame)))
        pieces = []
        for count, payload in parts:
            piece = OutBatch(batch.kind, count, payload)
            piece.tries = batch.tries
            piece.refusals = batch.refusals
            piece.first_sent = batch.first_sent
            pieces.append(piece)
        self._retry.extendleft(reversed(pieces))

    def _nacked(self) -> bool:
        # A method, not the attribute, so that type narrowing does not survive the awaits
        # during which the receiver may set it.
        return self._draining

    def _say_bye(self, writer: asyncio.StreamWriter) -> None:
        if not self._bye_sent:
            self._bye_sent = True
            with contextlib.suppress(Exception):
                writer.write(encode(Bye()))

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        """Ping a quiet connection (a slow --rate, an idle stdin) so the server's idle timeout
        spares it; return, ending the session as lost, once the server has gone silent:
        something owed (batches in flight, a ping) and nothing received for ``silence_timeout``."""
        nonce = 0
        tick = min(self._ping_interval, self._silence_timeout) / 2
        while not writer.is_closing():
            await asyncio.sleep(tick)
            now = time.monotonic()
            if (self._inflight or self._ping_pending) and now - self._heard_at >= self._silence_timeout:
                self._warn.warning("silent", "server_silent", stream=self.index,
                                   silent_s=round(now - self._heard_at, 3),
                                   unacked_records=self.held(), ping_unanswered=self._ping_pending)
                return
            if now - self._last_write >= self._ping_interval and not self._bye_sent:
                nonce += 1
                if not self._inflight and not self._ping_pending:
                    self._heard_at = now
                self._ping_pending = True
                self._last_write = now
                try:
                    writer.write(encode(Ping(nonce=nonce)))
                except (OSError, RuntimeError):
                    return  # broken: the session is over

    # -- receiving -------------------------------------------------------------------------

    async def _receive_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Outcome:
        while True:
            try:
                if self._bye_sent or self._draining:
                    body = await asyncio.wait_for(read_frame(reader, _REPLY_MAX_FRAME), _SETTLE_TIMEOUT)
                else:
                    body = await read_frame(reader, _REPLY_MAX_FRAME)
                msg = parse_server(decode_body(body)) if body is not None else None
            except asyncio.TimeoutError:
                return self._settled()
            except (OSError, ProtocolError) as exc:
                if self._bye_sent and self._complete():
                    return Outcome.FINISHED
                self._warn.warning("lost", "connection_lost", stream=self.index, error=repr(exc),
                                   unacked_records=self.held())
                return Outcome.LOST
            if msg is None:
                if self._bye_sent and self._complete():
                    return Outcome.FINISHED
                self._warn.warning("closed", "server_closed", stream=self.index,
                                   unacked_records=self.held())
                return Outcome.LOST
            self._heard_at = time.monotonic()
            if isinstance(msg, Ack):
                self._on_ack(msg.seq)
                if self._draining and not self._inflight:
                    return Outcome.NACKED
                if self._complete():
                    self._say_bye(writer)
            elif isinstance(msg, Nack):
                self._on_nack(msg)
                if not self._inflight:
                    return Outcome.NACKED
            elif isinstance(msg, ErrorFrame):
                log.warning("server_error", stream=self.index, code=msg.code, message=msg.message)
                return Outcome.LOST
            elif isinstance(msg, Pong):
                self._ping_pending = False
            else:
                log.warning("unexpected_frame", stream=self.index, frame=type(msg).__name__)
                return Outcome.LOST

    def _settled(self) -> Outcome:
        if self._bye_sent and self._complete():
            return Outcome.FINISHED
        return Outcome.NACKED if self._draining else Outcome.LOST

    def _on_ack(self, seq: int) -> None:
        batch = self._inflight.pop(seq, None)
        if batch is None:
            self._warn.warning("unknown-ack", "unknown_ack", stream=self.index, seq=seq)
            return
        stats = self._stats
        stats.acked += batch.count
        stats.inflight -= batch.count
        stats.latency.record_seconds(time.monotonic() - batch.sent_at)
        self._acks_this_session += 1
        self._slot.set()

    def _on_nack(self, nack: Nack) -> None:
        batch = self._inflight.pop(nack.seq, None)
        if batch is None:
            self._warn.warning("unknown-nack", "unknown_nack", stream=self.index, seq=nack.seq)
            return
        self._stats.nacked += batch.count
        self._stats.inflight -= batch.count
        if nack.code not in TRANSIENT_NACKS:
            batch.refusals += 1
        self._warn.warning(f"nack-{nack.code}", "batch_nacked", stream=self.index, code=nack.code,
                           message=nack.message, tries=batch.tries, refusals=batch.refusals)
        if not self._exhausted(batch, time.monotonic(), nack.code):
            self._retry.append(batch)
        # Stop sending into a server that refuses; settle what is owed, then reconnect.
        self._draining = True
        self._slot.set()
