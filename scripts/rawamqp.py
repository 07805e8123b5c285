"""A consumer that speaks just enough AMQP 0-9-1 to drain a queue, for benchmarks only.

It reads whole socket chunks and walks the frames in them with ``struct``, counts the
messages, and acks every ``ack_every`` of them with one ``basic.ack multiple``. It decodes
no properties and makes no message objects, so its rate is what the broker can deliver
to one consumer on this machine: the ceiling for any AMQP client, and the measure of what
the client library costs on top. Plain ``amqp://`` with PLAIN credentials, no heartbeats.
"""

from __future__ import annotations

import asyncio
import struct
import time
from urllib.parse import unquote, urlsplit

__all__ = ["drain"]

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD = struct.Struct(">HH")
_FRAME_END = b"\xce"
_METHOD_FRAME, _HEADER_FRAME, _BODY_FRAME = 1, 2, 3
_DELIVER = (60, 60)
_CLOSES = ((10, 50), (20, 40))  # connection.close, channel.close


def _short(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


def _long(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _method(channel: int, class_id: int, method_id: int, arguments: bytes) -> bytes:
    payload = _METHOD.pack(class_id, method_id) + arguments
    return _FRAME_HEAD.pack(_METHOD_FRAME, channel, len(payload)) + payload + _FRAME_END


class _Frames:
    """Frames from the socket, one whole chunk at a time."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()

    async def method(self) -> tuple[int, int, bytes]:
        """The next frame, which must be a method: (class, method, arguments)."""
        while True:
            frame = self._take()
            if frame is not None:
                kind, payload = frame
                if kind != _METHOD_FRAME:
                    raise ConnectionError(f"expected a method frame, got type {kind}")
                class_id, method_id = _METHOD.unpack_from(payload)
                if (class_id, method_id) in _CLOSES:
                    code = struct.unpack_from(">H", payload, 4)[0]
                    text = payload[7:7 + payload[6]].decode(errors="replace")
                    raise ConnectionError(f"the broker closed: {code} {text}")
                return class_id, method_id, payload[4:]
            await self.fill()

    def _take(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 7:
            return None
        kind, _, size = _FRAME_HEAD.unpack_from(buffer)
        if len(buffer) < size + 8:
            return None
        payload = bytes(buffer[7:7 + size])
        del buffer[:size + 8]
        return kind, payload

    async def fill(self) -> None:
        chunk = await self._reader.read(1 << 18)
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        self._buffer += chunk

    async def count_messages(self, messages: int, on_message: _Acker) -> None:
        """Walk deliveries until ``messages`` are whole, telling ``on_message`` each tag."""
        buffer = self._buffer
        head, method = _FRAME_HEAD.unpack_from, _METHOD.unpack_from
        seen = 0
        tag = 0
        body_left = 0
        while seen < messages:
            at = 0
            end = len(buffer)
            while end - at >= 7:
                kind, _, size = head(buffer, at)
                if end - at < size + 8:
                    break
                start = at + 7
                if kind == _METHOD_FRAME:
                    which = method(buffer, start)
                    if which == _DELIVER:
                        tag_at = start + 5 + buffer[start + 4]
                        tag = struct.unpack_from(">Q", buffer, tag_at)[0]
                    elif which in _CLOSES:
                        raise ConnectionError("the broker closed while delivering")
                elif kind == _HEADER_FRAME:
                    body_left = struct.unpack_from(">Q", buffer, start + 4)[0]
                    if body_left == 0:
                        seen += 1
                        on_message(tag, seen)
                elif kind == _BODY_FRAME:
                    body_left -= size
                    if body_left <= 0:
                        seen += 1
                        on_message(tag, seen)
                at += size + 8
            del buffer[:at]
            if seen < messages:
                await self.fill()


class _Acker:
    def __init__(self, writer: asyncio.StreamWriter, every: int, last: int) -> None:
        self._writer = writer
        self._every = every
        self._last = last

    def __call__(self, tag: int, seen: int) -> None:
        if seen % self._every == 0 or seen == self._last:
            self._writer.write(_method(1, 60, 80, struct.pack(">QB", tag, 1)))


async def drain(url: str, queue: str, messages: int, prefetch: int,
                ack_every: int = 100) -> tuple[float, float]:
    """Consume and ack ``messages`` from ``queue``: (seconds, CPU seconds of this process),
    timed from asking for the deliveries to the last one."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname or "localhost",
                                                   parts.port or 5672)
    frames = _Frames(reader)
    try:
        writer.write(b"AMQP\x00\x00\x09\x01")
        await frames.method()  # connection.start
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        writer.write(_method(0, 10, 11, _long(b"") + _short("PLAIN")
                             + _long(f"\0{user}\0{password}".encode()) + _short("en_US")))
        _, _, tune = await frames.method()  # connection.tune
        channel_max, frame_max, _ = struct.unpack_from(">HIH", tune)
        writer.write(_method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        writer.write(_method(0, 10, 40, _short(vhost) + _short("") + b"\x00"))
        await frames.method()  # connection.open-ok
        writer.write(_method(1, 20, 10, _short("")))
        await frames.method()  # channel.open-ok
        writer.write(_method(1, 60, 10, struct.pack(">IHB", 0, prefetch, 0)))
        await frames.method()  # basic.qos-ok
        # The clock starts before basic.consume: a round trip more than the deliveries
        # take, rather than a first chunk of them counted without its time.
        started, cpu = time.perf_counter(), time.process_time()
        writer.write(_method(1, 60, 20, struct.pack(">H", 0) + _short(queue) + _short("")
                             + b"\x00" + _long(b"")))
        await frames.method()  # basic.consume-ok
        await frames.count_messages(messages, _Acker(writer, ack_every, messages))
        await writer.drain()
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        writer.close()
