"""What every registered parser must do, in-tree or installed through an entry point.

For each name in ``registry.known_names()`` (built with default options):

- it accepts its own ``example()``, and valid records of every kind it claims that this
  module has samples for; a parser of any kind (``"*"``, a transform) accepts the
  documents the in-tree first parsers make;
- it refuses non-maps, and the bad samples of the kinds it claims, with RecordError;
- given arbitrary msgpack-able values it returns a dict or raises RecordError with a
  non-empty reason, nothing else;
- it never mutates its input;
- its output is serializable with orjson (whenever its input was);
- its output is deterministic, apart from ``ingested_at``;
- if it offers the optional fast path ``encode_batch``, that agrees with ``parse``: for a
  message of records ``parse`` all accepts it gives each document's id, ts and JSON; for
  any other message, or bytes that are no message at all, it declines (None), never
  raising; and ``encode_columns``, if offered too, makes the same documents as columns
  and declines the same messages.

A plugin author runs this file with the plugin installed to check it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.errors import RecordError
from sluice.parser import registry
from sluice.parser.interface import ANY_KIND, BatchEncoder, ColumnEncoder, Columns, Parser

NAMES = registry.known_names()
PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])

# -- samples per kind ----------------------------------------------------------------------

_text = st.text(min_size=1, max_size=40)
measurements = st.fixed_dictionaries(
    {
        "id": _text,
        "sensor": _text,
        "metric": _text,
        "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
        "ts": st.integers(0, 253402300799999),
    },
    optional={
        "unit": st.text(min_size=1, max_size=10),
        # tag keys carry no dots (docs/records.md)
        "tags": st.dictionaries(_text.map(lambda k: k.replace(".", "_")), st.text(max_size=20),
                                max_size=4),
    },
)

#: kind -> strategy of valid records. Add a kind here when adding a first parser for it.
VALID: dict[str, st.SearchStrategy[dict[str, Any]]] = {"measurement": measurements}

_GOOD = {"id": "r-1", "sensor": "s", "metric": "m", "value": 1.5, "ts": 1000}


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in _GOOD.items() if k != field}


#: kind -> records that every parser claiming the kind must refuse.
BAD: dict[str, list[Any]] = {
    "measurement": [
        *(_without(field) for field in _GOOD),
        {**_GOOD, "id": 7},
        {**_GOOD, "sensor": ""},
        {**_GOOD, "metric": None},
        {**_GOOD, "value": "1.5"},
        {**_GOOD, "value": True},
        {**_GOOD, "value": math.inf},
        {**_GOOD, "value": -math.inf},
        {**_GOOD, "value": math.nan},
        {**_GOOD, "ts": "1000"},
        {**_GOOD, "ts": -1},
        {**_GOOD, "tags": ["a"]},
        {**_GOOD, "tags": {"a": 1}},
        {**_GOOD, "unit": 3},
        {**_GOOD, "extra": 1},
    ],
}

#: Refused by every parser: a record, and so a document, is always a map.
NON_MAPS: list[Any] = [None, True, 0, 1.5, "text", b"bytes", [], [_GOOD], (1, 2)]

# What msgpack can carry (keys as sluice decodes them: str or bytes).
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
anything = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4), inner, max_size=6),
    max_leaves=20,
)


@st.composite
def near_measurements(draw: st.DrawFn) -> dict[str, Any]:
    """Valid measurements with one field dropped, replaced by anything, or added."""
    record = dict(draw(measurements))
    field = draw(st.sampled_from([*_GOOD, "unit", "tags", "extra"]))
    if draw(st.booleans()):
        record.pop(field, None)
    else:
        record[field] = draw(anything)
    return record


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture(params=NAMES)
def parser(request: pytest.FixtureRequest) -> Parser:
    return registry.create(request.param)


def claimed(parser: Parser, table: dict[str, Any]) -> Iterator[str]:
    return (kind for kind in table if kind in parser.kinds)


def documents_from_first_parsers() -> st.SearchStrategy[dict[str, Any]]:
    """What a transform sees: documents made by the in-tree parsers of specific kinds."""
    makers = [
        (registry.create(name), VALID[kind])
        for name in registry.BUILTIN
        for kind in registry.create(name).kinds
        if kind in VALID
    ]
    return st.one_of([strategy.map(maker.parse) for maker, strategy in makers])


def snapshot(value: Any) -> bytes:
    # Bytes, not ==: catches 1 -> 1.0 and True -> 1, which compare equal.
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def without_clock(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "ingested_at"}


def check_accepts(parser: Parser, record: Any) -> None:
    before = snapshot(record)
    doc = parser.parse(record)
    assert isinstance(doc, dict)
    assert doc is not record
    assert snapshot(record) == before, "parse mutated its input"
    orjson.dumps(doc)
    assert without_clock(parser.parse(record)) == without_clock(doc)
    assert without_clock(registry.create(parser.name).parse(record)) == without_clock(doc)


def check_total(parser: Parser, value: Any) -> None:
    """Any input: a dict or a RecordError with a reason, input untouched."""
    before = snapshot(value)
    refused: RecordError | None = None
    try:
        doc = parser.parse(value)
    except RecordError as exc:
        refused = exc
    if refused is not None:
        assert isinstance(refused.reason, str)
        assert refused.reason
        assert " " not in refused.reason, "reasons are slugs (they become metric labels)"
    else:
        assert isinstance(doc, dict)
        try:
            orjson.dumps(value)
        except TypeError:
            pass  # garbage in: a transform may pass through what JSON cannot hold
        else:
            orjson.dumps(doc)
    assert snapshot(value) == before, "parse mutated its input"


# -- the contract --------------------------------------------------------------------------


def test_registered_parsers_are_well_formed(parser: Parser) -> None:
    assert isinstance(parser, Parser)
    assert parser.name in NAMES
    assert parser.kinds
    assert all(isinstance(kind, str) and kind for kind in parser.kinds)


def test_accepts_its_example(parser: Parser) -> None:
    check_accepts(parser, parser.example())


def test_accepts_valid_records_of_the_kinds_it_claims(parser: Parser) -> None:
    if ANY_KIND in parser.kinds:
        strategy = documents_from_first_parsers()
    else:
        kinds = list(claimed(parser, VALID))
        # A plugin's own kind has no generator here: its example() is the valid sample.
        strategy = st.one_of([VALID[kind] for kind in kinds]) if kinds else st.just(parser.example())

    @PROPERTY
    @given(strategy)
    def run(record: dict[str, Any]) -> None:
        check_accepts(parser, record)

    run()


@pytest.mark.parametrize("value", NON_MAPS, ids=repr)
def test_refuses_non_maps(parser: Parser, value: Any) -> None:
    with pytest.raises(RecordError) as caught:
        parser.parse(value)
    assert caught.value.reason


def test_refuses_bad_records_of_the_kinds_it_claims(parser: Parser) -> None:
    for kind in claimed(parser, BAD):
        for bad in BAD[kind]:
            before = snapshot(bad)
            with pytest.raises(RecordError) as caught:
                parser.parse(bad)
            assert caught.value.reason, bad
            assert snapshot(bad) == before


def test_arbitrary_values_give_a_dict_or_a_record_error(parser: Parser) -> None:
    @PROPERTY
    @given(anything | near_measurements())
    def run(value: Any) -> None:
        check_total(parser, value)

    run()


# -- the optional fast path ----------------------------------------------------------------


def canonical(doc: Any) -> bytes:
    # JSON texts of one document may differ (1e-07 or 1e-7, key order); their values not.
    return orjson.dumps(without_clock(doc), option=orjson.OPT_SORT_KEYS)


def joined(columns: Columns) -> list[tuple[str, int, bytes]]:
    """``encode_columns``' documents, each joined from its parts as the worker joins them."""
    count = len(columns.ids)
    assert len(columns.stamps) == count and (columns.parts or not count)
    parts = []
    for part in columns.parts:
        assert isinstance(part, bytes) or len(part) == count
        parts.append([part] * count if isinstance(part, bytes) else part)
    return list(zip(columns.ids, columns.stamps, map(b"".join, zip(*parts))))


def check_batch(parser: Parser, records: list[Any]) -> None:
    """``encode_batch`` of a message of ``records``: declined, or what ``parse`` makes;
    and ``encode_columns``, when offered, makes the same documents."""
    assert isinstance(parser, BatchEncoder)
    payload = msgpack.packb(records, use_bin_type=True)
    encoded = parser.encode_batch(payload)
    if isinstance(parser, ColumnEncoder):
        columns = parser.encode_columns(payload)
        assert (columns is None) == (encoded is None)
        if columns is not None and encoded is not None:
            assert isinstance(columns, Columns)
            by_columns = joined(columns)
            assert [(i, ts) for i, ts, _ in by_columns] == [(i, ts) for i, ts, _ in encoded]
            assert [canonical(orjson.loads(doc)) for _, _, doc in by_columns] == \
                [canonical(orjson.loads(doc)) for _, _, doc in encoded]
    if encoded is None:
        return
    assert isinstance(encoded, list)
    assert len(encoded) == len(records)
    for record, (doc_id, ts, source) in zip(records, encoded):
        doc = parser.parse(record)  # raises if the fast path took a record parse refuses
        got = orjson.loads(source)
        assert (doc_id, ts) == (doc["id"], doc["ts"])
        assert type(ts) is int and type(doc_id) is str
        assert canonical(got) == canonical(doc)
        assert ("ingested_at" in got) == ("ingested_at" in doc)


def batch_encoders() -> list[str]:
    return [name for name in NAMES if isinstance(registry.create(name), BatchEncoder)]


@pytest.fixture(params=batch_encoders() or [None])
def batch_parser(request: pytest.FixtureRequest) -> Parser:
    if request.param is None:
        pytest.fail("no parser offers encode_batch; the measurement parser should")
    return registry.create(request.param)


def test_encode_batch_agrees_with_parse_on_valid_messages(batch_parser: Parser) -> None:
    assert isinstance(batch_parser, BatchEncoder)
    kinds = list(claimed(batch_parser, VALID))
    strategy = st.one_of([VALID[kind] for kind in kinds]) if kinds else st.just(batch_parser.example())

    @PROPERTY
    @given(st.lists(strategy, max_size=20))
    def run(records: list[dict[str, Any]]) -> None:
        encoded = batch_parser.encode_batch(msgpack.packb(records, use_bin_type=True))
        assert encoded is not None, "a message of valid records must take the fast path"
        check_batch(batch_parser, records)

    run()


def test_encode_batch_declines_what_parse_refuses(batch_parser: Parser) -> None:
    good = [batch_parser.example()]

    @PROPERTY
    @given(st.lists(anything | near_measurements(), min_size=1, max_size=5))
    def run(values: list[Any]) -> None:
        check_batch(batch_parser, good + values)

    run()
    for kind in claimed(batch_parser, BAD):
        for bad in BAD[kind]:
            assert isinstance(batch_parser, BatchEncoder)
            assert batch_parser.encode_batch(msgpack.packb([*good, bad])) is None, bad
            if isinstance(batch_parser, ColumnEncoder):
                assert batch_parser.encode_columns(msgpack.packb([*good, bad])) is None, bad


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", b"\x92\x01", msgpack.packb({"id": "x"}), msgpack.packb("text"),
    msgpack.packb([_GOOD]) + b"\x00", msgpack.packb([_GOOD])[:-3],
], ids=repr)
def test_encode_batch_declines_bytes_that_are_no_message(batch_parser: Parser, payload: bytes) -> None:
    assert isinstance(batch_parser, BatchEncoder)
    assert batch_parser.encode_batch(payload) is None
    if isinstance(batch_parser, ColumnEncoder):
        assert batch_parser.encode_columns(payload) is None
