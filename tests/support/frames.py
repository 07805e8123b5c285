"""An incremental frame decoder for tests: feed it bytes as they come, get message maps back.

Services read frames from a stream with :func:`sluice.protocol.read_frame`; tests that
hold raw bytes (a stream cut at arbitrary places, fuzzed input) decode them with this,
through the same length rule (:func:`~sluice.protocol.check_length`) and body decoder.
"""

from __future__ import annotations

from typing import Any

from sluice.protocol import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE, check_length, decode_body

__all__ = ["FrameDecoder"]


class FrameDecoder:
    """A length over the limit is refused as soon as its 4 header bytes are seen, so an
    oversized body is never buffered."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        out: list[dict[str, Any]] = []
        while len(self._buffer) >= HEADER_SIZE:
            (length,) = HEADER.unpack_from(self._buffer)
            check_length(length, self._max_frame)
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER_SIZE:end])
            del self._buffer[:end]
            out.append(decode_body(body))
        return out
