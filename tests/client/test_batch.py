from __future__ import annotations

import msgpack
import pytest

from sluice.client.batch import array_header, split_payload


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536, 70000])
def test_array_header_is_what_msgpack_writes(count: int) -> None:
    expected = msgpack.packb([None] * count)[: len(array_header(count))]
    assert array_header(count) == expected


@pytest.mark.parametrize(("total", "parts"), [(1, 2), (2, 2), (7, 3), (500, 2), (500, 9), (3, 10)])
def test_split_keeps_every_record_and_its_bytes(total: int, parts: int) -> None:
    records = [{"id": f"r{i}", "value": i * 1.5, "blob": b"x" * (i % 5)} for i in range(total)]
    payload = msgpack.packb(records, use_bin_type=True)
    pieces = split_payload(payload, parts)
    assert 1 <= len(pieces) <= parts
    assert sum(count for count, _ in pieces) == total
    decoded = [r for count, piece in pieces for r in msgpack.unpackb(piece, raw=False)]
    assert decoded == records
    for count, piece in pieces:
        assert len(msgpack.unpackb(piece)) == count
        # each piece is a header plus a contiguous run of the original record bytes
        assert piece[len(array_header(count)):] in payload
