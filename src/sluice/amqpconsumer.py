"""A lean AMQP 0-9-1 connection for consuming: one channel; qos, consume, cancel, ack, nack.

The parser's deliveries come in here, not through aiormq. aiormq reads every frame with
three awaits, parses it with pamqp, hands it through a queue to the channel's task and
starts one task per delivery: about 85 µs of CPU per message, which held a parser to about
12,000 messages/s on a machine where RabbitMQ delivers 60,000 to a consumer that walks the
frames itself (``docs/performance.md``). This connection walks every frame of each chunk
the socket gives in one loop, reads ``basic.deliver`` and the content header by hand (only
what a consumer needs: the tags and ``message-id``) and calls the consumer's callback
directly, with no task. Every other frame is rare and goes through pamqp, as in aiormq.

Publishing and declarations stay on aiormq: :class:`sluice.amqp.BrokerLink` opens this
connection next to its aiormq one, to the same node, when its owner consumes.

What it speaks: PLAIN or EXTERNAL (``auth=external``) authentication, TLS
(``amqps://``, with aiormq's URL options ``cafile``, ``capath``, ``cadata``, ``certfile``,
``keyfile`` and ``no_verify_ssl``), heartbeats
(``heartbeat``, 60 s by default, as aiormq), the connection name (``name``), and on its
one channel ``basic.qos``, ``basic.consume``, ``basic.cancel``, ``basic.ack`` and
``basic.nack``. A channel or connection the broker closes, a consumer the broker cancels
(its queue was deleted), a broken frame and a silent peer all end the connection: its
owner reconnects, and RabbitMQ has already requeued what was not acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import ssl
import struct
import urllib.parse
from typing import Any, Callable, Optional, cast

from pamqp import commands
from pamqp import frame as amqp_frame

from .errors import BrokerUnavailable, ConfigError
from .logs import get_logger

__all__ = ["ConsumerChannel", "ConsumerConnection", "Delivered", "connect"]

log = get_logger(__name__)

_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BODY_SIZE_FLAGS = struct.Struct(">QH")
_ACK = struct.Struct(">BHIHHQBB")  # a whole basic.ack or basic.nack frame
_DELIVER = b"\x00\x3c\x00\x3c"  # class 60 (basic), method 60 (deliver)
_FRAME_END = 0xCE
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_METHOD, _CONTENT_HEADER, _CONTENT_BODY, _HEARTBEAT_FRAME = 1, 2, 3, 8
#: the largest frame this side accepts (RabbitMQ's default frame_max is 128 KiB)
_FRAME_MAX = 131_072
_CHANNEL = 1
#: seconds a clean close waits for the broker's close-ok
_CLOSE_TIMEOUT = 5.0


class Delivered:
    """One message as a consumer's callback gets it."""

    __slots__ = ("body", "channel", "consumer_tag", "delivery_tag", "message_id", "redelivered")

    def __init__(self, channel: ConsumerChannel, consumer_tag: str, delivery_tag: int,
                 redelivered: bool, message_id: Optional[str], body: bytes) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.message_id = message_id
        self.body = body


#: called in the connection's read loop, once per delivery; it must not block
OnMessage = Callable[[Delivered], None]


class _Url:
    """The parts of an AMQP URL this connection uses, read as aiormq reads them."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigError(f"not an AMQP URL (amqp:// or amqps://): {parts.scheme}://...")
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.mechanism = query.get("auth", "plain").upper()
        if self.mechanism not in ("PLAIN", "EXTERNAL"):
            raise ConfigError(f"auth={query['auth']} in the AMQP URL: the parser's consumer "
                              "authenticates with plain or external (a client certificate)")
        self.tls = parts.scheme == "amqps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (5671 if self.tls else 5672)
        self.user = urllib.parse.unquote(parts.username or "guest")
        self.password = urllib.parse.unquote(parts.password or "guest")
        path = parts.path
        self.vhost = "/" if path in ("", "/") else urllib.parse.unquote(path[1:])
        try:
            self.heartbeat = int(float(query.get("heartbeat", "60")))
        except ValueError:
            raise ConfigError(f"heartbeat in the AMQP URL is not a number: "
                              f"{query['heartbeat']!r}") from None
        if not 0 <= self.heartbeat <= 65535:
            raise ConfigError(f"heartbeat in the AMQP URL must be 0 to 65535 seconds, not "
                              f"{self.heartbeat}")
        self.name = query.get("name")
        self.query = query

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.tls:
            return None
        query = self.query
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=query.get("cafile"), capath=query.get("capath"),
                cadata=query.get("cadata"),
            )
            if query.get("certfile"):
                context.load_cert_chain(query["certfile"], query.get("keyfile"))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files named in the AMQP URL cannot be loaded: {exc}") from exc
        if query.get("no_verify_ssl", "0") != "0":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _retrieved(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``future`` (once) without "exception was never retrieved" if nobody asks."""
    if not future.done():
        future.set_exception(exc)
        future.exception()


class ConsumerChannel:
    """The connection's one channel. Its methods raise :class:`BrokerUnavailable` once it
    is closed; ``closing`` is done (with the reason, if any) when it closes."""

    def __init__(self, connection: ConsumerConnection, number: int) -> None:
        self._connection = connection
        self.number = number
        self.closing: asyncio.Future[None] = connection.loop.create_future()
        self._consumers: dict[str, OnMessage] = {}
        self._tags = 0

    @property
    def is_closed(self) -> bool:
        return self.closing.done()

    def _check_open(self) -> None:
        if self.closing.done():
            raise BrokerUnavailable("the consuming channel is closed")

    async def basic_qos(self, prefetch_count: int) -> None:
        await self._connection.rpc(self.number, commands.Basic.Qos(prefetch_count=prefetch_count),
                                   commands.Basic.QosOk)

    async def basic_consume(self, queue: str, on_message: OnMessage) -> str:
        """Consume ``queue`` with manual acks; returns the consumer tag."""
        self._tags += 1
        tag = f"sluice.{id(self):x}.{self._tags}"
        # Registered before the request: deliveries may follow consume-ok in the same read.
        self._consumers[tag] = on_message
        try:
            await self._connection.rpc(
                self.number, commands.Basic.Consume(queue=queue, consumer_tag=tag),
                commands.Basic.ConsumeOk,
            )
        except BaseException:
            self._consumers.pop(tag, None)
            raise
        return tag

    async def basic_cancel(self, consumer_tag: str) -> None:
        """Cancel a consumer; deliveries the broker sent before its cancel-ok still reach
        the callback (they were read before the answer)."""
        await self._connection.rpc(self.number, commands.Basic.Cancel(consumer_tag=consumer_tag),
                                   commands.Basic.CancelOk)
        self._consumers.pop(consumer_tag, None)

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._check_open()
        self._connection.write(_ACK.pack(_METHOD, self.number, 13, 60, 80, delivery_tag,
                                         int(multiple), _FRAME_END))

    async def basic_nack(self, delivery_tag: int, multiple: bool = False,
                         requeue: bool = True) -> None:
        self._check_open()
        self._connection.write(_ACK.pack(_METHOD, self.number, 13, 60, 120, delivery_tag,
                                         int(multiple) | int(requeue) << 1, _FRAME_END))

    def _deliver(self, message: Delivered) -> None:
        on_message = self._consumers.get(message.consumer_tag)
        if on_message is None:
            # A consumer this side does not know holds deliveries nobody will answer;
            # giving them back would only loop them. Closing returns them to the queue.
            self._connection._abort(BrokerUnavailable(
                f"a delivery for consumer {message.consumer_tag}, which this side does not have"))
            return
        try:
            on_message(message)
        except Exception as exc:  # the read loop must outlive a callback's bug
            log.error("amqp_consumer_callback_failed", error=repr(exc), exc_info=exc)


class ConsumerConnection(asyncio.Protocol):
    """The connection; made by :func:`connect`. ``closing`` is done when it closes."""

    def __init__(self, url: _Url) -> None:
        self.loop = asyncio.get_running_loop()
        self._url = url
        self.closing: asyncio.Future[None] = self.loop.create_future()
        self._transport: Optional[asyncio.Transport] = None
        self._opened = False
        self._channel: Optional[ConsumerChannel] = None
        # What is read and not yet walked: chunks, and the bytes the next frame needs.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._need = 7
        # The delivery being assembled: its deliver frame's fields, header, body parts.
        self._deliver: Optional[tuple[str, int, bool]] = None
        self._message_id: Optional[str] = None
        self._body_size = 0
        self._body: list[bytes] = []
        self._body_read = 0
        # One request at a time waits for its answer (AMQP allows no more per channel).
        self._rpc_lock = asyncio.Lock()
        self._waiter: Optional[tuple[tuple[type, ...], asyncio.Future[Any]]] = None
        self._closing_started = False
        self._heartbeat = 0
        self._last_read = self.loop.time()
        self._beat: Optional[asyncio.TimerHandle] = None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        reason = BrokerUnavailable(f"connection to RabbitMQ lost: {exc!r}" if exc
                                   else "connection to RabbitMQ closed")
        self._closed(reason)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        self._buffered += len(data)
        if self._chunks:
            self._chunks.append(data)
            if self._buffered < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks = []
        elif self._buffered < self._need:
            self._chunks.append(data)
            return
        try:
            rest = self._walk(data)
        except Exception as exc:
            log.error("amqp_frame_refused", error=repr(exc))
            self._abort(BrokerUnavailable(f"a frame from RabbitMQ could not be read: {exc}"))
            return
        self._buffered = len(rest)
        if rest:
            self._chunks.append(rest)
            self._need = 7 if len(rest) < 7 else 8 + _HEADER.unpack_from(rest)[2]
        else:
            self._need = 7

    def _walk(self, data: bytes) -> bytes:
        """Handle every whole frame in ``data``; return what is left of the next one."""
        pos, end = 0, len(data)
        while end - pos >= 7:
            kind, channel, size = _HEADER.unpack_from(data, pos)
            if size > _FRAME_MAX:
                raise ValueError(f"frame of {size} bytes, over frame_max {_FRAME_MAX}")
            stop = pos + 7 + size
            if stop >= end:
                break
            if data[stop] != _FRAME_END:
                raise ValueError(f"frame end byte {data[stop]:#x} instead of 0xce")
            if kind == _CONTENT_BODY:
                self._on_body(data[pos + 7:stop])
            elif kind == _METHOD:
                if data[pos + 7:pos + 11] == _DELIVER:
                    self._on_deliver(data, pos + 11)
                else:
                    self._on_method(channel, data[pos:stop + 1])
            elif kind == _CONTENT_HEADER:
                self._on_header(data, pos + 7)
            elif kind != _HEARTBEAT_FRAME:
                raise ValueError(f"unknown frame type {kind}")
            pos = stop + 1
        return data[pos:]

    # -- deliveries ----------------------------------------------------------------------

    def _on_deliver(self, data: bytes, at: int) -> None:
        n = data[at]
        consumer_tag = data[at + 1:at + 1 + n].decode()
        at += 1 + n
        self._deliver = (consumer_tag, _U64.unpack_from(data, at)[0], bool(data[at + 8] & 1))

    def _on_header(self, data: bytes, at: int) -> None:
        if self._deliver is None:
            raise ValueError("content header without a basic.deliver before it")
        self._body_size, flags = _BODY_SIZE_FLAGS.unpack_from(data, at + 4)
        at += 14
        # Properties come in flag order; skip to message-id (bit 7), the only one read.
        message_id = None
        if flags & 0xFF80:
            if flags & 0x8000:  # content-type
                at += 1 + data[at]
            if flags & 0x4000:  # content-encoding
                at += 1 + data[at]
            if flags & 0x2000:  # headers: a field table with its byte length first
                at += 4 + _U32.unpack_from(data, at)[0]
            if flags & 0x1000:  # delivery-mode
                at += 1
            if flags & 0x0800:  # priority
                at += 1
            for bit in (0x0400, 0x0200, 0x0100):  # correlation-id, reply-to, expiration
                if flags & bit:
                    at += 1 + data[at]
            if flags & 0x0080:
                message_id = data[at + 1:at + 1 + data[at]].decode("utf-8", "replace")
        self._message_id = message_id
        self._body, self._body_read = [], 0
        if self._body_size == 0:
            self._delivered(b"")

    def _on_body(self, part: bytes) -> None:
        if self._deliver is None:
            raise ValueError("content body without a basic.deliver before it")
        self._body_read += len(part)
        if self._body_read > self._body_size:
            raise ValueError(f"content body over its announced {self._body_size} bytes")
        if self._body_read == self._body_size:
            self._delivered(b"".join(self._body) + part if self._body else part)
        else:
            self._body.append(part)

    def _delivered(self, body: bytes) -> None:
        assert self._deliver is not None
        consumer_tag, delivery_tag, redelivered = self._deliver
        self._deliver, self._body = None, []
        channel = self._channel
        if channel is None or channel.is_closed:
            return  # RabbitMQ requeues it with the channel
        channel._deliver(Delivered(channel, consumer_tag, delivery_tag, redelivered,
                                   self._message_id, body))

    # -- every other method --------------------------------------------------------------

    def _on_method(self, channel: int, raw: bytes) -> None:
        _, _, method = amqp_frame.unmarshal(raw)
        if isinstance(method, commands.Connection.Close):
            self._write_if_open(amqp_frame.marshal(commands.Connection.CloseOk(), 0))
            self._abort(BrokerUnavailable(
                f"RabbitMQ closed the connection: {method.reply_code} {method.reply_text}"))
        elif isinstance(method, commands.Channel.Close):
            self._write_if_open(amqp_frame.marshal(commands.Channel.CloseOk(), channel))
            self._abort(BrokerUnavailable(
                f"RabbitMQ closed the consuming channel: {method.reply_code} {method.reply_text}"))
        elif isinstance(method, commands.Basic.Cancel):
            # The queue was deleted or its node went away: consume again from scratch.
            self._abort(BrokerUnavailable(f"RabbitMQ cancelled consumer {method.consumer_tag}"))
        elif isinstance(method, (commands.Connection.Blocked, commands.Connection.Unblocked)):
            log.info("amqp_connection_flow", frame=method.name)  # acks are never blocked
        elif self._waiter is not None and isinstance(method, self._waiter[0]):
            _, future = self._waiter
            self._waiter = None
            if not future.done():
                future.set_result(method)
        else:
            log.warning("amqp_unexpected_frame", frame=method.name, channel=channel)

    def _write_if_open(self, data: bytes) -> None:
        """For frames that mean nothing once the socket is closing (heartbeats, close-oks)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise BrokerUnavailable("the consuming connection is closed")
        self._transport.write(data)

    async def rpc(self, channel: int, request: Any, *answers: type) -> Any:
        """Send ``request`` and wait for one of ``answers``.

        Cancelled once the request is out, it ends the connection: the broker acts on the
        request anyway (a consumer made that nobody registered, say), and its answer would
        be taken for the next request's.
        """
        async with self._rpc_lock:
            if self._closing_started or self.closing.done() or (
                    channel and self._channel is not None and self._channel.is_closed):
                raise BrokerUnavailable("the consuming connection is closed")
            future: asyncio.Future[Any] = self.loop.create_future()
            self._waiter = (answers, future)
            self.write(amqp_frame.marshal(request, channel))
            try:
                return await future
            except asyncio.CancelledError:
                self._abort(BrokerUnavailable(f"{request.name} was cancelled unanswered"))
                raise

    # -- opening and closing -------------------------------------------------------------

    async def open(self) -> None:
        url = self._url
        start = await self._expect(_PROTOCOL_HEADER, commands.Connection.Start)
        mechanisms = start.mechanisms
        if isinstance(mechanisms, bytes):
            mechanisms = mechanisms.decode("ascii", "replace")
        if url.mechanism not in mechanisms.split():
            raise ConfigError(f"RabbitMQ offers {mechanisms}, not {url.mechanism}")
        from . import __version__

        properties: dict[str, Any] = {
            "product": "sluice",
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "capabilities": {
                "authentication_failure_close": True,
                "basic.nack": True,
                "connection.blocked": True,
                "consumer_cancel_notify": True,
                "per_consumer_qos": True,
            },
        }
        if url.name:
            properties["connection_name"] = url.name
        tune = await self._expect(
            amqp_frame.marshal(commands.Connection.StartOk(
                client_properties=properties, mechanism=url.mechanism,
                response=f"\0{url.user}\0{url.password}" if url.mechanism == "PLAIN" else "",
                locale="en_US"), 0),
            commands.Connection.Tune,
        )
        self._heartbeat = url.heartbeat
        frame_max = min(tune.frame_max or _FRAME_MAX, _FRAME_MAX)
        self.write(amqp_frame.marshal(commands.Connection.TuneOk(
            channel_max=tune.channel_max, frame_max=frame_max, heartbeat=self._heartbeat), 0))
        await self.rpc(0, commands.Connection.Open(virtual_host=url.vhost),
                       commands.Connection.OpenOk)
        self._opened = True
        if self._heartbeat > 0:
            self._beat = self.loop.call_later(self._heartbeat / 2, self._send_heartbeat)

    async def _expect(self, data: bytes, answer: type) -> Any:
        future: asyncio.Future[Any] = self.loop.create_future()
        self._waiter = ((answer,), future)
        self.write(data)
        return await future

    def _send_heartbeat(self) -> None:
        silent = self.loop.time() - self._last_read
        # RabbitMQ beats every heartbeat/2 when idle; silence for three heartbeat timeouts
        # (aiormq's grace too) is a dead peer or a dead path to it.
        if silent > 3 * self._heartbeat:
            self._abort(BrokerUnavailable(f"no frame from RabbitMQ in {silent:.0f} s"))
            return
        self._write_if_open(_HEARTBEAT)
        self._beat = self.loop.call_later(self._heartbeat / 2, self._send_heartbeat)

    async def channel(self) -> ConsumerChannel:
        """Open the connection's one channel."""
        if self._channel is not None:
            raise RuntimeError("the consuming connection has one channel, already open")
        self._channel = ConsumerChannel(self, _CHANNEL)
        await self.rpc(_CHANNEL, commands.Channel.Open(), commands.Channel.OpenOk)
        return self._channel

    def _abort(self, reason: BaseException) -> None:
        """End the connection now, for ``reason``."""
        self._closed(reason)
        if self._transport is not None:
            self._transport.close()

    def _closed(self, reason: BaseException) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self._waiter is not None:
            _retrieved(self._waiter[1], reason)
            self._waiter = None
        if self._channel is not None:
            _retrieved(self._channel.closing, reason)
        _retrieved(self.closing, reason)

    async def close(self) -> None:
        """Close cleanly (unacked deliveries go back to their queues); at most a few
        seconds, then the socket is closed anyway."""
        if self.closing.done() or self._transport is None:
            return
        self._closing_started = True
        try:
            if self._opened and not self._transport.is_closing():
                if self._waiter is not None:  # an RPC still waiting gets no answer now
                    _retrieved(self._waiter[1],
                               BrokerUnavailable("the consuming connection is closing"))
                future: asyncio.Future[Any] = self.loop.create_future()
                self._waiter = ((commands.Connection.CloseOk,), future)
                self.write(amqp_frame.marshal(commands.Connection.Close(
                    reply_code=200, reply_text="normal shutdown", class_id=0, method_id=0), 0))
                with contextlib.suppress(asyncio.TimeoutError, BrokerUnavailable):
                    await asyncio.wait_for(future, _CLOSE_TIMEOUT)
        finally:
            self._abort(BrokerUnavailable("the consuming connection was closed by its owner"))


async def connect(url: str) -> ConsumerConnection:
    """Connect, authenticate and open the connection (no channel yet)."""
    parsed = _Url(url)
    loop = asyncio.get_running_loop()
    context = parsed.ssl_context()
    _, connection = await loop.create_connection(
        lambda: ConsumerConnection(parsed), parsed.host, parsed.port, ssl=context,
        server_hostname=parsed.host if context is not None else None,
    )
    try:
        await connection.open()
    except BaseException:
        connection._abort(BrokerUnavailable("the consuming connection did not open"))
        raise
    return connection
