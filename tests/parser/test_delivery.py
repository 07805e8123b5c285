"""Decoding one AMQP message: records -> ready bulk actions and dead letters."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sluice.es import index_name
from sluice.parser.deadletter import POISON
from sluice.parser.delivery import SMALL_BODY, MessageDecoder
from sluice.parser.interface import Columns
from sluice.parser.registry import build_chain
from sluice.records import TsWindow

from .harness import make_records


def message(body: bytes) -> Any:
    return SimpleNamespace(body=body, delivery_tag=7, channel=None, message_id="m-1")


def decoder() -> MessageDecoder:
    return MessageDecoder("px", {
        "measurement": build_chain(["measurement"]),
        "other": build_chain(["uppercase"]),
    })


def test_good_records_become_create_actions_into_their_daily_index() -> None:
    records = make_records(50)
    delivery = decoder().decode("measurement", message(msgpack.packb(records)))
    assert (delivery.tag, delivery.message_id, delivery.letters) == (7, "m-1", [])
    assert delivery.positions == list(range(50))
    for record, action in zip(records, delivery.actions):
        head, source, end = action.split(b"\n")
        assert end == b""
        assert orjson.loads(head) == {"create": {
            "_index": index_name("px", "measurement", record["ts"]), "_id": record["id"]}}
        doc = orjson.loads(source)
        assert {k: doc[k] for k in record} == record
        assert doc["parser"] == "measurement" and doc["@timestamp"].endswith("Z")


def test_rejected_records_become_dead_letters_and_the_rest_go_on() -> None:
    good = make_records(3)
    bad = good[1] | {"value": "high"}
    delivery = decoder().decode("measurement", message(msgpack.packb([good[0], bad, good[2]])))
    assert delivery.positions == [0, 2]
    [letter] = delivery.letters
    assert letter.reason == "bad_value"
    assert msgpack.unpackb(letter.body) == bad


def test_a_document_without_an_id_is_rejected() -> None:
    delivery = decoder().decode(
        "other", message(msgpack.packb([{"sensor": "x", "ts": 1}, {"id": "o1", "ts": 1}]))
    )
    assert [letter.reason for letter in delivery.letters] == ["missing_id"]
    assert delivery.positions == [1]


def test_the_index_comes_from_ts_never_from_the_clock() -> None:
    ts = 1_700_000_000_000
    records = [
        {"id": "no-ts"}, {"id": "str-ts", "ts": "1700000000000"}, {"id": "frac", "ts": 1.5},
        {"id": "bool", "ts": True}, {"id": "whole-float", "ts": float(ts)},
        {"id": "int", "ts": ts},
    ]
    delivery = decoder().decode("other", message(msgpack.packb(records)))
    assert [(letter.record_id, letter.reason) for letter in delivery.letters] == [
        ("no-ts", "missing_ts"), ("str-ts", "bad_ts"), ("frac", "bad_ts"), ("bool", "bad_ts"),
    ]
    assert delivery.positions == [4, 5]
    for action in delivery.actions:
        head, source, _ = action.split(b"\n")
        assert orjson.loads(head)["create"]["_index"] == index_name("px", "other", ts)
        assert orjson.loads(source)["ts"] == ts


def test_an_id_over_512_bytes_is_dead_lettered() -> None:
    fits, too_long = "é" * 256, "é" * 257  # 512 and 514 bytes of UTF-8
    records = [{"id": fits, "ts": 1}, {"id": too_long, "ts": 1}, {"id": "x" * 600, "ts": 1}]
    delivery = decoder().decode("other", message(msgpack.packb(records)))
    assert [letter.reason for letter in delivery.letters] == ["id_too_long", "id_too_long"]
    assert delivery.positions == [0]


def test_poison_bodies_are_dead_lettered_whole() -> None:
    for body in (b"\xc1\xc1", msgpack.packb({"not": "a list"}), msgpack.packb([1, 2])[:-1]):
        delivery = decoder().decode("measurement", message(body))
        assert delivery.actions == []
        [letter] = delivery.letters
        assert (letter.reason, letter.body) == (POISON, body)


def test_a_ts_outside_the_window_is_dead_lettered_ts_out_of_range() -> None:
    """30 days back and 1 day ahead of the clock, both ends included."""
    now = 1_760_000_000_000
    day = 86_400_000
    window_decoder = MessageDecoder(
        "px", {"measurement": build_chain(["measurement"])}, TsWindow(30, 1),
        clock=lambda: now / 1000,
    )
    base = make_records(1)[0]
    stamps = {"oldest": now - 30 * day, "too-old": now - 30 * day - 1, "now": now,
              "latest": now + day, "too-new": now + day + 1, "epoch": 0,
              "year-9999": 253402300799999}
    records = [base | {"id": name, "ts": ts} for name, ts in stamps.items()]
    delivery = window_decoder.decode("measurement", message(msgpack.packb(records)))
    kept = [records[p]["id"] for p in delivery.positions]
    assert kept == ["oldest", "now", "latest"]
    refused = {msgpack.unpackb(letter.body)["id"]: letter.reason for letter in delivery.letters}
    assert refused == {name: "ts_out_of_range" for name in ("too-old", "too-new", "epoch",
                                                             "year-9999")}


def test_a_window_side_of_zero_is_unbounded() -> None:
    now = 1_760_000_000_000
    window_decoder = MessageDecoder(
        "px", {"measurement": build_chain(["measurement"])}, TsWindow(0, 0),
        clock=lambda: now / 1000,
    )
    base = make_records(1)[0]
    records = [base | {"id": "epoch", "ts": 0}, base | {"id": "far", "ts": 253402300799999}]
    delivery = window_decoder.decode("measurement", message(msgpack.packb(records)))
    assert (delivery.positions, delivery.letters) == ([0, 1], [])


def without_fast_path(chain: Any, encode_batch: Any = None) -> Any:
    """``chain`` with its ``encode_batch`` removed, or replaced by ``encode_batch``."""
    return SimpleNamespace(names=chain.names, accepts=chain.accepts, parse=chain.parse,
                           encode_batch=encode_batch)


def comparable(actions: list[bytes]) -> list[tuple[Any, Any]]:
    """Each action's two lines, decoded; ``ingested_at`` (the clock) left out."""
    out = []
    for action in actions:
        head, source, _ = action.split(b"\n")
        doc = orjson.loads(source)
        doc.pop("ingested_at")
        out.append((orjson.loads(head), doc))
    return out


def test_the_fast_path_makes_what_parse_makes_across_days() -> None:
    day = 86_400_000
    records = [r | {"ts": 1_760_000_000_000 + k * day // 3} for k, r in enumerate(make_records(9))]
    body = msgpack.packb(records)
    chain = build_chain(["measurement"])
    assert chain.encode_batch is not None and chain.encode_batch(body) is not None
    fast = MessageDecoder("px", {"measurement": chain}).decode("measurement", message(body))
    slow = MessageDecoder("px", {"measurement": without_fast_path(chain)}).decode(
        "measurement", message(body))
    assert fast.positions == slow.positions == list(range(9))
    assert comparable(fast.actions) == comparable(slow.actions)
    assert len({head["create"]["_index"] for head, _ in comparable(fast.actions)}) == 4


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=8, unique=True))
@settings(max_examples=200, deadline=None)
def test_the_fast_path_writes_every_id_as_parse_does(ids: list[str]) -> None:
    # Ids full of what JSON escapes take the fast path and come out as parse writes them.
    ids = [*ids, '","', '\\', 'a\\","b', '"', 'é\n\u2028']
    records = [r | {"id": doc_id} for doc_id, r in zip(ids, make_records(len(ids)))]
    body = msgpack.packb(records)
    chain = build_chain(["measurement"])
    only_fast = SimpleNamespace(names=chain.names, accepts=chain.accepts, parse=None,
                                encode_batch=chain.encode_batch)  # parse would raise
    fast = MessageDecoder("px", {"measurement": only_fast}).decode("measurement", message(body))
    assert (fast.letters, fast.positions) == ([], list(range(len(ids))))
    slow = MessageDecoder("px", {"measurement": without_fast_path(chain)}).decode(
        "measurement", message(body))
    heads = [action.split(b"\n")[0] for action in fast.actions]
    assert heads == [action.split(b"\n")[0] for action in slow.actions]
    assert [orjson.loads(head)["create"]["_id"] for head in heads] == ids


CORRUPTIONS = {
    "pairs": lambda encoded: [(doc_id, ts) for doc_id, ts, _ in encoded],
    "text_source": lambda encoded: [(i, ts, s.decode()) for i, ts, s in encoded],
    "bool_ts": lambda encoded: [(i, True, s) for i, _, s in encoded],
    "float_ts": lambda encoded: [(i, float(ts), s) for i, ts, s in encoded],
    "empty_id": lambda encoded: [("", ts, s) for _, ts, s in encoded],
    "long_id": lambda encoded: [("x" * 600, ts, s) for _, ts, s in encoded],
    "bytes_id": lambda encoded: [(i.encode(), ts, s) for i, ts, s in encoded],
    "not_a_list": lambda encoded: 5,
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_an_encode_batch_out_of_its_contract_leaves_the_message_to_parse(corrupt: Any) -> None:
    records = make_records(6)
    body = msgpack.packb(records)
    chain = build_chain(["measurement"])
    broken = without_fast_path(chain, lambda payload: corrupt(chain.encode_batch(payload)))
    delivery = MessageDecoder("px", {"measurement": broken}).decode("measurement", message(body))
    slow = MessageDecoder("px", {"measurement": without_fast_path(chain)}).decode(
        "measurement", message(body))
    assert (delivery.positions, delivery.letters) == (list(range(6)), [])
    assert comparable(delivery.actions) == comparable(slow.actions)
    assert [doc["id"] for _, doc in comparable(delivery.actions)] == [r["id"] for r in records]


def with_columns(chain: Any, encode_columns: Any) -> Any:
    """``chain`` whose ``encode_columns`` is replaced by ``encode_columns``."""
    return SimpleNamespace(names=chain.names, accepts=chain.accepts, parse=chain.parse,
                           encode_batch=chain.encode_batch, encode_columns=encode_columns)


COLUMN_CORRUPTIONS = {
    "ids_a_map": lambda c: c._replace(ids=map(str, c.ids)),
    "ids_a_generator": lambda c: c._replace(ids=(i for i in c.ids)),
    "ids_none": lambda c: c._replace(ids=None),
    "ids_one_string": lambda c: c._replace(ids="".join(i[0] for i in c.ids)),
    "ids_short": lambda c: c._replace(ids=c.ids[:-1]),
    "stamps_a_map": lambda c: c._replace(stamps=map(int, c.stamps)),
    "stamps_short": lambda c: c._replace(stamps=c.stamps[:-1]),
    "a_part_short": lambda c: c._replace(parts=tuple(
        p if isinstance(p, bytes) else p[:-1] for p in c.parts)),
    "text_parts": lambda c: c._replace(parts=tuple(
        p.decode() if isinstance(p, bytes) else p for p in c.parts)),
    "no_parts": lambda c: c._replace(parts=()),
    "a_plain_tuple": lambda c: tuple(c),
    "a_list_of_items": lambda c: list(zip(c.ids, c.stamps, c.ids)),
}


@pytest.mark.parametrize("corrupt", COLUMN_CORRUPTIONS.values(), ids=COLUMN_CORRUPTIONS.keys())
def test_encode_columns_out_of_its_contract_leaves_the_message_to_parse(corrupt: Any) -> None:
    """Whatever shape a plugin's columns take, the message goes the record-by-record way
    with its records in place, and the decoder never raises (in the worker, an exception
    would requeue the message for ever)."""
    records = make_records(4)
    body = msgpack.packb(records)
    chain = build_chain(["measurement"])
    columns = chain.encode_columns(body)
    assert isinstance(columns, Columns) and len(columns.ids) == 4
    broken = MessageDecoder("px", {"measurement": with_columns(
        chain, lambda payload: corrupt(chain.encode_columns(payload)))})
    slow = MessageDecoder("px", {"measurement": without_fast_path(chain)})
    with capture_logs() as logs:
        delivery = broken.decode("measurement", message(body))
        together = broken.decode_many("measurement", messages_of([body, _valid(2)]))
    expected = slow.decode("measurement", message(body))
    assert (delivery.positions, delivery.letters) == (list(range(4)), [])
    assert comparable(delivery.actions) == comparable(expected.actions)
    assert comparable(together[0].actions) == comparable(expected.actions)
    assert [d.count for d in together] == [4, 2]
    assert [entry for entry in logs if entry["event"] == "encode_batch_failed"]


def test_items_that_are_not_triples_are_reported_as_the_plugins_bug() -> None:
    """Every other item with a fourth element: ``zip`` would drop it unseen."""
    records = make_records(4)
    chain = build_chain(["measurement"])
    broken = without_fast_path(chain, lambda payload: [
        (*item, b"extra") if k % 2 else item for k, item in enumerate(chain.encode_batch(payload))
    ])
    with capture_logs() as logs:
        delivery = MessageDecoder("px", {"measurement": broken}).decode(
            "measurement", message(msgpack.packb(records)))
    assert (delivery.positions, delivery.letters) == (list(range(4)), [])
    [failure] = [entry for entry in logs if entry["event"] == "encode_batch_failed"]
    assert "not (id, ts, JSON)" in failure["error"]


def test_a_ts_no_index_can_hold_is_left_to_parse_without_blaming_the_plugin() -> None:
    records = make_records(3)
    chain = build_chain(["measurement"])
    far = without_fast_path(chain, lambda payload: [
        (doc_id, 10**15, source) for doc_id, _, source in chain.encode_batch(payload)
    ])
    with capture_logs() as logs:
        delivery = MessageDecoder("px", {"measurement": far}).decode(
            "measurement", message(msgpack.packb(records)))
    assert (delivery.positions, delivery.letters) == ([0, 1, 2], [])
    assert [entry for entry in logs if entry["event"] == "encode_batch_failed"] == []


# -- decode_many: small messages encoded together ------------------------------------------

def messages_of(bodies: list[bytes]) -> list[Any]:
    return [SimpleNamespace(body=body, delivery_tag=n, channel=None, message_id=f"m{n}")
            for n, body in enumerate(bodies)]


def summary(delivery: Any) -> tuple[Any, ...]:
    return (delivery.tag, delivery.message_id, delivery.count, delivery.positions,
            comparable(delivery.actions), [(letter.reason, letter.body) for letter in delivery.letters])


def _valid(n: int) -> bytes:
    return msgpack.packb(make_records(n))


def _one_bad(n: int) -> bytes:
    records = make_records(n)
    records[n // 2] = records[n // 2] | {"value": "hot"}
    return msgpack.packb(records)


BODIES = st.one_of(
    st.integers(1, 8).map(_valid),
    st.integers(1, 8).map(_one_bad),
    st.integers(1, 4).map(lambda n: _valid(n) + msgpack.packb(make_records(1)[0])),  # one too many
    st.integers(2, 4).map(lambda n: _valid(n)[:-5]),  # cut short
    st.just(msgpack.packb({"not": "an array"})),
    st.just(b""),
    st.just(_valid(120)),  # over SMALL_BODY: decoded on its own
)


@settings(max_examples=200, deadline=None)
@given(bodies=st.lists(BODIES, min_size=1, max_size=8))
def test_decoding_messages_together_is_decoding_each(bodies: list[bytes]) -> None:
    together = decoder().decode_many("measurement", messages_of(bodies))
    alone = [decoder().decode("measurement", m) for m in messages_of(bodies)]
    assert list(map(summary, together)) == list(map(summary, alone))


def test_records_never_move_from_one_message_to_the_next() -> None:
    """One body has a record after its array, the next lacks one: joined, the records
    would line up into one valid array of 3. Each is poison on its own, and stays so."""
    r1, r2, r3 = make_records(3)
    bodies = [msgpack.packb([r1]) + msgpack.packb(r2), b"\x92" + msgpack.packb(r3)]
    assert len(msgpack.unpackb(b"\x93" + bodies[0][1:] + bodies[1][1:])) == 3
    together = decoder().decode_many("measurement", messages_of(bodies))
    assert [[letter.reason for letter in d.letters] for d in together] == [["poison"], ["poison"]]
    assert [d.actions for d in together] == [[], []]


def test_an_encode_batch_an_item_short_leaves_every_message_to_parse() -> None:
    """Its items could not be matched to their records: none may be taken."""
    chain = build_chain(["measurement"])
    short = MessageDecoder("px", {"measurement": without_fast_path(
        chain, lambda payload: chain.encode_batch(payload)[:-1])})
    bodies = [_valid(3), _valid(2), _valid(4)]
    with capture_logs() as logs:
        together = short.decode_many("measurement", messages_of(bodies))
        alone = short.decode("measurement", messages_of(bodies)[0])
    slow = MessageDecoder("px", {"measurement": without_fast_path(chain)})
    expected = [slow.decode("measurement", m) for m in messages_of(bodies)]
    assert list(map(summary, together)) == list(map(summary, expected))
    assert summary(alone) == summary(expected[0])
    assert [d.count for d in together] == [3, 2, 4]
    failures = [entry for entry in logs if entry["event"] == "encode_batch_failed"]
    assert failures and "items for 9 records" in failures[0]["error"]


def test_small_messages_take_one_pass_and_the_large_their_own() -> None:
    chain = build_chain(["measurement"])
    payloads: list[bytes] = []

    def encode(payload: bytes) -> Any:
        payloads.append(payload)
        return chain.encode_batch(payload)

    counting = MessageDecoder("px", {"measurement": without_fast_path(chain, encode)})
    bodies = [_valid(5), _valid(3), _valid(120), _valid(4)]
    assert len(bodies[2]) > SMALL_BODY >= max(map(len, bodies[:2]))
    deliveries = counting.decode_many("measurement", messages_of(bodies))
    assert [d.count for d in deliveries] == [5, 3, 120, 4]
    assert [len(msgpack.unpackb(p)) for p in payloads] == [12, 120]
    ids = [[doc["id"] for _, doc in comparable(d.actions)] for d in deliveries]
    assert ids == [[r["id"] for r in msgpack.unpackb(b)] for b in bodies]
