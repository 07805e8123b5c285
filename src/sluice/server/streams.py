"""Closing client streams politely and within bounds."""

from __future__ import annotations

import asyncio
import contextlib

from ..protocol import ErrorFrame, encode

__all__ = ["close_stream", "close_with_error"]

#: how long to keep discarding input after an error frame (bounded in time, not bytes: a
#: client streaming fast can send many MiB before it reads the error)
LINGER_SECONDS = 2.0
#: how long a close may wait for the client to take our last bytes
CLOSE_SECONDS = 5.0


async def close_stream(writer: asyncio.StreamWriter, timeout: float = CLOSE_SECONDS) -> None:
    """Close after flushing what is buffered; a client that does not read is cut off."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (asyncio.TimeoutError, OSError):
        writer.transport.abort()
    except Exception:
        writer.transport.abort()


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def close_with_error(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, code: str, message: str,
    *, linger: float = LINGER_SECONDS,
) -> None:
    """Send an ``error`` frame, then close.

    Closing a socket that still has unread input makes the kernel send a reset, which can
    destroy the error frame before the client reads it (many clients drop what they had
    buffered when they see the reset). So the write side is shut first, and the input is
    read and dropped, for at most ``linger`` seconds, until the client closes.
    """
    if writer.transport.is_closing():
        return
    with contextlib.suppress(Exception):
        writer.write(encode(ErrorFrame(code, message[:1000])))
        if writer.can_write_eof():
            writer.write_eof()
        await asyncio.wait_for(_discard(reader), linger)
    await close_stream(writer)
