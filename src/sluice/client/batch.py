"""The unit the client keeps until it is acked: one msgpack payload of ``count`` records.

A batch's ``payload`` bytes are fixed when it is made; every resend carries exactly those
bytes, so the record ids (and everything else) a server sees on a retry are the ones it
may already have published.
"""

from __future__ import annotations

import struct

import msgpack

__all__ = ["OutBatch", "array_header", "split_payload"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class OutBatch:
    """A batch and its delivery state (slots: thousands of these live at once)."""

    __slots__ = ("count", "first_sent", "kind", "payload", "refusals", "sent_at", "tries")

    def __init__(self, kind: str, count: int, payload: bytes) -> None:
        self.kind = kind
        self.count = count
        self.payload = payload
        self.tries = 0           # times sent
        self.refusals = 0        # nacks that count against --max-tries (not `unavailable`)
        self.sent_at = 0.0       # monotonic time of the latest send
        self.first_sent = 0.0    # monotonic time of the first send (0.0: never sent)

    def __repr__(self) -> str:
        return (f"OutBatch(kind={self.kind!r}, count={self.count}, bytes={len(self.payload)}, "
                f"tries={self.tries}, refusals={self.refusals})")


def array_header(count: int) -> bytes:
    """The msgpack array header for ``count`` elements (what msgpack itself would write)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + _U16.pack(count)
    return b"\xdd" + _U32.pack(count)


def split_payload(payload: bytes, parts: int = 2) -> list[tuple[int, bytes]]:
    """Cut a payload (a msgpack array) into up to ``parts`` payloads of whole records.

    Each record keeps its exact bytes: the array is walked with ``skip``/``tell`` rather
    than decoded and re-encoded. Returns ``(count, payload)`` pairs, none empty.
    """
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=max(len(payload), 1))
    unpacker.feed(payload)
    total = unpacker.read_array_header()
    bounds = [unpacker.tell()]
    for _ in range(total):
        unpacker.skip()
        bounds.append(unpacker.tell())
    parts = max(1, min(parts, total))
    out: list[tuple[int, bytes]] = []
    for i in range(parts):
        lo = total * i // parts
        hi = total * (i + 1) // parts
        if hi > lo:
            out.append((hi - lo, array_header(hi - lo) + payload[bounds[lo]:bounds[hi]]))
    return out
