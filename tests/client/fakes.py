"""An in-process stand-in for a sluice server, scriptable per test: how many batches to
nack (and with which code), after how many to drop the connection, which connections to
leave unanswered, whether to withhold acks, when to vanish, how small a frame it takes.
It speaks wire
protocol v1 through sluice.protocol, records every batch it acked, and never touches
RabbitMQ (the integration tests use the real server for that)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import msgpack

from sluice.protocol import (
    DEFAULT_MAX_FRAME,
    Ack,
    Batch,
    Bye,
    ErrorFrame,
    Hello,
    Nack,
    Ping,
    Pong,
    Welcome,
    decode_body,
    encode,
    parse_client,
    read_frame,
)


@dataclass
class Received:
    connection: int  # the server's index of the connection it came on, from 0
    client_id: str
    seq: int
    kind: str
    count: int
    payload: bytes

    def records(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = msgpack.unpackb(self.payload, raw=False)
        return out


@dataclass
class FakeServer:
    max_frame: int = DEFAULT_MAX_FRAME
    max_inflight: int = 16
    nack_first: int = 0          # nack this many batches (over all connections) first
    nack_code: str = "unavailable"
    drop_after: list[int] = field(default_factory=list)  # per connection: abort after n batches
    refuse_first: int = 0        # answer this many hellos with an error frame
    silent_first: int = 0        # this many connections get a welcome, then no reply at all
    hold_acks: bool = False      # read batches and answer pings, but ack nothing until release()
    vanish_after: int | None = None  # after acking this many batches: flush, close, stop listening
    acked: list[Received] = field(default_factory=list)
    seen: list[Received] = field(default_factory=list)
    connections: int = 0
    pings: int = 0
    _server: asyncio.AbstractServer | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _held: list[tuple[asyncio.StreamWriter, Received]] = field(default_factory=list)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def acked_records(self) -> list[dict[str, object]]:
        return [r for batch in self.acked for r in batch.records()]

    def release(self) -> None:
        """Stop withholding acks and send the ones held back."""
        self.hold_acks = False
        held, self._held = self._held, []
        for writer, got in held:
            if not writer.is_closing():
                self.acked.append(got)
                writer.write(encode(Ack(got.seq)))

    def message_ids(self) -> list[str]:
        """What the real server would use as AMQP message_id for every batch it was sent."""
        return [f"{b.client_id}:{b.seq}" for b in self.seen]

    def _vanish(self) -> None:
        if self._server is not None:
            self._server.close()  # stop listening: reconnects are refused from now on
        for writer in self._writers:
            writer.close()  # after what is buffered (the acks already written) goes out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        index = self.connections
        self.connections += 1
        drop_after = self.drop_after[index] if index < len(self.drop_after) else None
        self._writers.add(writer)
        try:
            await self._serve(reader, writer, index, drop_after)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int,
                     drop_after: int | None) -> None:
        body = await read_frame(reader, self.max_frame)
        if body is None:
            return
        hello = parse_client(decode_body(body))
        assert isinstance(hello, Hello)
        if self.refuse_first > 0:
            self.refuse_first -= 1
            writer.write(encode(ErrorFrame("too_many_connections", "go away")))
            return
        writer.write(encode(Welcome("fake", self.max_frame, self.max_inflight)))
        silent = self.silent_first > 0
        if silent:
            self.silent_first -= 1
        batches = 0
        while True:
            body = await read_frame(reader, self.max_frame)
            if body is None:
                return
            msg = parse_client(decode_body(body))
            if silent:
                if isinstance(msg, Batch):
                    self.seen.append(Received(index, hello.client_id, msg.seq, msg.kind, msg.count,
                                              msg.payload))
                continue
            if isinstance(msg, Batch):
                got = Received(index, hello.client_id, msg.seq, msg.kind, msg.count, msg.payload)
                self.seen.append(got)
                batches += 1
                if drop_after is not None and batches > drop_after:
                    writer.transport.abort()
                    return
                if self.nack_first > 0:
                    self.nack_first -= 1
                    writer.write(encode(Nack(msg.seq, self.nack_code, "scripted nack")))
                elif self.hold_acks:
                    self._held.append((writer, got))
                else:
                    self.acked.append(got)
                    writer.write(encode(Ack(msg.seq)))
                    if self.vanish_after is not None and len(self.acked) >= self.vanish_after:
                        self._vanish()
                        return
            elif isinstance(msg, Ping):
                self.pings += 1
                writer.write(encode(Pong(msg.nonce)))
            elif isinstance(msg, Bye):
                await writer.drain()
                return
            await writer.drain()
