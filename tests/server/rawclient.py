"""A minimal raw protocol client for server tests: it sends exactly the bytes a test asks
for and hands back decoded server frames, so tests can misbehave on purpose."""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import msgpack

from sluice.protocol import HEADER_SIZE, encode, encode_batch

__all__ = ["RawClient", "frame", "records_payload"]


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def records_payload(count: int, start: int = 0, pad: int = 0) -> bytes:
    records = [{"id": f"r{start + i}", "sensor": "s1", "metric": "temp", "value": float(i),
                "ts": 1_700_000_000_000 + i, "pad": "x" * pad} for i in range(count)]
    payload: bytes = msgpack.packb(records, use_bin_type=True)
    return payload


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def hello(self, client_id: str = "test-client") -> dict[str, Any]:
        self.send({"type": "hello", "version": 1, "client_id": client_id})
        welcome = await self.recv()
        assert welcome is not None
        assert welcome["type"] == "welcome", welcome
        return welcome

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(encode(message, max_frame=2**32 - 1))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def batch(self, seq: int, payload: bytes, kind: str = "measurement", count: int = 1) -> None:
        self.writer.write(encode_batch(seq, kind, count, payload))

    async def recv(self, timeout: float = 30) -> Optional[dict[str, Any]]:
        """The next server frame, or None when the server closed the connection."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(HEADER_SIZE), timeout)
            body = await asyncio.wait_for(
                self.reader.readexactly(int.from_bytes(header, "big")), timeout
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        message: dict[str, Any] = msgpack.unpackb(body, raw=False)
        return message

    async def recv_until_closed(self, timeout: float = 30) -> list[dict[str, Any]]:
        out = []
        while True:
            message = await self.recv(timeout)
            if message is None:
                return out
            out.append(message)

    async def settle(self, seqs: set[int], timeout: float = 30) -> dict[int, dict[str, Any]]:
        """Read until every seq in ``seqs`` is acked or nacked; returns seq -> frame."""
        out: dict[int, dict[str, Any]] = {}
        while len(out) < len(seqs):
            message = await self.recv(timeout)
            assert message is not None, f"closed with {len(seqs) - len(out)} batches unsettled"
            assert message["type"] in ("ack", "nack"), message
            assert message["seq"] in seqs and message["seq"] not in out, message
            out[message["seq"]] = message
        return out

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except asyncio.TimeoutError:
            # A server that stopped reading (at a limit) never takes what is still buffered.
            # Only then abort: aborting a transport that already closed cleanly trips a
            # CPython bug (its loop is gone; AttributeError: 'NoneType' ... 'call_soon').
            self.writer.transport.abort()
        except (ConnectionError, OSError):
            pass  # already lost
