"""The measurement parser's compiled fast path (``sluice.parser._measurements``).

It must make byte for byte the documents that msgspec alone makes, decline (None) every
message it cannot decide alone, so that msgspec decides it as before, and never crash or
raise on any bytes at all. Each check runs the parser twice on the same payload, with the
compiled path and without it, and compares what both return.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import Any, Optional

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice import records
from sluice.parser import builtin
from sluice.parser.builtin import MeasurementParser
from sluice.parser.interface import Columns
from sluice.timestamps import MAX_TS

compiled = builtin._measurements


def test_the_compiled_path_is_built() -> None:
    assert compiled is not None, (
        "sluice.parser._measurements was not built: install a C compiler "
        "(apt-get install -y gcc) and reinstall sluice (pip install -e .)"
    )


def test_its_bounds_are_the_records_rules() -> None:
    assert compiled is not None
    assert compiled.limits() == {
        "id": records._MAX_ID, "name": records._MAX_NAME, "unit": records._MAX_UNIT,
        "tags": records.MAX_TAGS, "tag_key": records.MAX_TAG_KEY,
        "tag_value": records.MAX_TAG_VALUE, "ts": MAX_TS, "exact_int": 2**53,
    }


def documents(columns: Optional[Columns]) -> Optional[list[tuple[str, int, bytes]]]:
    if columns is None:
        return None
    count = len(columns.ids)
    parts = [[part] * count if isinstance(part, bytes) else part for part in columns.parts]
    return list(zip(columns.ids, columns.stamps, map(b"".join, zip(*parts))))


def both_ways(payload: bytes) -> tuple[Any, Any, Any]:
    """(compiled.transcode's answer, the parser's documents with it, and without it)."""
    assert compiled is not None
    parser = MeasurementParser(clock=lambda: 1_700_000_100.25)
    fast = compiled.transcode(payload)
    with_c = documents(parser.encode_columns(payload))
    builtin._measurements = None
    try:
        without = documents(parser.encode_columns(payload))
    finally:
        builtin._measurements = compiled
    return fast, with_c, without


def assert_same(payload: bytes) -> Any:
    fast, with_c, without = both_ways(payload)
    assert with_c == without
    return fast


def plain_record(k: int, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": f"r-{k}", "sensor": "boiler-7", "metric": "temperature",
                            "value": 21.5 + k, "unit": "C", "ts": 1_700_000_000_123 + k,
                            "tags": {"site": "north"}}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def test_plain_messages_take_the_compiled_path_and_match() -> None:
    for body in ([plain_record(k) for k in range(50)],
                 [plain_record(k, ts=1_700_000_000_123) for k in range(50)],
                 [plain_record(k, unit=None, tags=None) for k in range(3)],
                 [plain_record(0, tags={}), plain_record(1, value=-0.0), plain_record(2, value=7)],
                 []):
        assert assert_same(msgpack.packb(body)) is not None


@pytest.mark.parametrize("change", [
    {"id": "é-1"}, {"id": 'quote"d'}, {"id": "back\\slash"}, {"id": "tab\t"}, {"id": ""},
    {"id": "x" * 129}, {"id": 5}, {"sensor": ""}, {"metric": "m" * 257}, {"unit": ""},
    {"unit": "u" * 65}, {"value": True}, {"value": None}, {"value": "1"}, {"value": 2**53 + 1},
    {"value": float("nan")}, {"value": float("inf")}, {"ts": -1}, {"ts": MAX_TS + 1},
    {"ts": 1.5}, {"tags": {"a.b": "x"}}, {"tags": {"": "x"}}, {"tags": {"k" * 65: "x"}},
    {"tags": {"k": "v" * 257}}, {"tags": {f"k{n}": "v" for n in range(33)}}, {"tags": {"k": 1}},
    {"tags": None}, {"tags": ["a"]}, {"extra": 1},
])
def test_what_it_cannot_decide_alone_goes_the_msgspec_way(change: dict[str, Any]) -> None:
    record = plain_record(1)
    record.update(change)
    body = [plain_record(0), record]
    assert assert_same(msgpack.packb(body)) is None


def test_missing_fields_repeated_keys_and_trailing_bytes_are_declined() -> None:
    without_ts = plain_record(0)
    del without_ts["ts"]
    assert assert_same(msgpack.packb([without_ts])) is None
    # A map with "id" twice, written by hand.
    twice = b"\x91\x86" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in [
        ("id", "a"), ("id", "b"), ("sensor", "s"), ("metric", "m"), ("value", 1.0), ("ts", 1)])
    assert assert_same(twice) is None
    assert assert_same(msgpack.packb([plain_record(0)]) + b"\x00") is None
    assert assert_same(msgpack.packb({"not": "an array"})) is None


def test_numbers_in_every_msgpack_width_match() -> None:
    body = [plain_record(0, value=v, ts=t) for v, t in [
        (0, 0), (1, 127), (-1, 128), (-33, 255), (300, 65_535), (-300, 65_536),
        (70_000, 2**32 - 1), (-70_000, 2**32), (2**40, MAX_TS), (-(2**53), 1), (2**53, 2),
        (1e-7, 3), (1e20, 4), (5e-324, 5), (sys.float_info.max, 6), (0.1, 7),
    ]]
    assert assert_same(msgpack.packb(body)) is not None
    as_float32 = msgpack.packb([plain_record(0, value=0.1)], use_single_float=True)
    assert assert_same(as_float32) is not None


_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10),
    st.text(max_size=6),
    st.sampled_from(["", "x" * 64, "x" * 65, "x" * 128, "x" * 129, "x" * 256, "x" * 257]),
)
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**60), 2**60),
    st.booleans(), st.none(), st.sampled_from([0.0, -0.0, 1e16, 1e-5, 123.456]),
)
_ts = st.one_of(st.integers(-5, MAX_TS + 5), st.just(1_700_000_000_123), st.floats(0, 1e12))
_tags = st.dictionaries(_text, _text, max_size=4)


@st.composite
def _records(draw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": draw(_text), "sensor": draw(_text), "metric": draw(_text),
                              "value": draw(_value), "ts": draw(_ts)}
    if draw(st.booleans()):
        fields["unit"] = draw(_text)
    if draw(st.booleans()):
        fields["tags"] = draw(st.one_of(_tags, st.none()))
    if draw(st.integers(0, 9)) == 0:
        fields["extra"] = 1
    if draw(st.integers(0, 9)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    order = draw(st.permutations(sorted(fields)))
    return {key: fields[key] for key in order}


@settings(max_examples=400, deadline=None)
@given(st.lists(_records(), max_size=6))
def test_any_message_gives_the_same_documents_either_way(body: list[dict[str, Any]]) -> None:
    assert_same(msgpack.packb(body))


@settings(max_examples=200, deadline=None)
@given(st.lists(_records().filter(lambda r: "extra" not in r), max_size=6),
       st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_encoded_as_msgspec_encodes_it(body: list[dict[str, Any]],
                                                      value: float) -> None:
    assert_same(msgpack.packb([*body, plain_record(0, value=value)]))


def mutations(seed: int) -> Iterator[bytes]:
    """Valid messages cut short, with bytes flipped, inserted or dropped."""
    rng = random.Random(seed)
    body = msgpack.packb([plain_record(k, tags={"site": f"s{k}", "rack": "r"}) for k in range(4)])
    for _ in range(300):
        data = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            kind = rng.randrange(4)
            if kind == 0:
                data[at] = rng.randrange(256)
            elif kind == 1:
                del data[at:]
                if not data:
                    break
            elif kind == 2:
                data.insert(at, rng.randrange(256))
            else:
                del data[at]
                if not data:
                    break
        yield bytes(data)


@pytest.mark.parametrize("seed", range(5))
def test_damaged_messages_never_crash_and_still_match(seed: int) -> None:
    for payload in mutations(seed):
        assert_same(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_answered_without_raising(payload: bytes) -> None:
    assert compiled is not None
    answer = compiled.transcode(payload)
    assert answer is None or len(answer) == 5


def test_stated_lengths_larger_than_the_payload_are_declined_without_allocating() -> None:
    assert compiled is not None
    for payload in (b"\xdd\xff\xff\xff\xff", b"\xdc\xff\xff", b"\x91\xdf\xff\xff\xff\xff",
                    b"\x91\x81\xdb\xff\xff\xff\xff", b"\x91\x81\xa2id\xdb\x7f\xff\xff\xff"):
        assert compiled.transcode(payload) is None
