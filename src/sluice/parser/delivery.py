"""One AMQP message on its way through the parser: decoded, parsed, and turned into
ready ``create`` actions plus the dead letters for whatever was rejected.

This is the per-record hot path. Each action is built with one ``bytes.join``, and the
ndjson body of a bulk request is then just these actions concatenated. The fast path
below checks and builds a message's actions column by column, each step one C-level pass
(``map``, ``zip``, ``min``/``max``), so no bytecode runs per record there (but for a
message whose records fall on several days).

When a kind's chain offers ``encode_columns`` (:class:`~sluice.parser.interface.ColumnEncoder`)
or ``encode_batch`` (:class:`~sluice.parser.interface.BatchEncoder`), a message is first
tried whole through it; only a message it declines (some record is invalid, or the body is
not an array) is decoded and parsed record by record, which is also what names the reason
of each refusal. Both are checked and assembled by one path: ``encode_batch``'s items are
turned into columns first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from typing import Any, Callable, Optional, Protocol

import msgpack
import msgspec
import orjson

from ..amqpconsumer import ConsumerChannel, Delivered
from ..errors import RecordError
from ..es import index_name
from ..logs import RateLimitedLog, get_logger
from ..records import TsWindow
from ..timestamps import MS_PER_DAY
from .deadletter import POISON, DeadLetter
from .indexer import action_prefix
from .interface import Columns, Encoded

__all__ = ["Chain", "Delivery", "MessageDecoder"]

log = get_logger(__name__)

BatchEncode = Callable[[bytes], Optional[list[Encoded]]]
ColumnsEncode = Callable[[bytes], Optional[Columns]]

# Distinct days seen before the action-prefix cache is cleared (backfills span many).
_DAY_CACHE_LIMIT = 4096


# Elasticsearch refuses an _id over 512 bytes; under 128 characters it cannot be.
_MAX_ID_BYTES = 512
_MAX_ID_CHARS = _MAX_ID_BYTES // 4
#: Messages up to this size are encoded together (decode_many); larger ones have enough
#: records to spread the fixed costs of a pass on their own.
SMALL_BODY = 8192
# A msgpack array's elements as they are on the wire, each checked to be whole: a body is
# exactly one array, no byte missing and none after it, or DecodeError.
_ELEMENTS = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
# Exact types: a bool is an int to isinstance, and would make an index of 1970.
_STR, _INT, _THREE = frozenset([str]), frozenset([int]), frozenset([3])


def _array_length(body: bytes) -> Optional[int]:
    """The element count in a msgpack array's header; None when ``body`` does not start
    with one."""
    if not body:
        return None
    first = body[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(body) >= 3:
        return int.from_bytes(body[1:3], "big")
    if first == 0xDD and len(body) >= 5:
        return int.from_bytes(body[1:5], "big")
    return None


def _length(items: Any) -> Any:
    """How many documents ``encode_batch`` or ``encode_columns`` made; a description of
    what it made instead when that has no length (never raises: it judges a plugin)."""
    column = items.ids if isinstance(items, Columns) else items
    if isinstance(column, (str, bytes)):
        return f"no list but a {type(column).__name__}"
    try:
        return len(column)
    except TypeError:
        return f"no list but a {type(column).__name__}"


def _as_columns(encode: BatchEncode) -> ColumnsEncode:
    """``encode_batch`` as ``encode_columns``: the same checks and assembly serve both."""

    def encode_columns(payload: bytes) -> Any:
        encoded = encode(payload)
        if not isinstance(encoded, list):
            return encoded  # None, or out of contract: judged by the caller
        if not encoded:
            return Columns([], [], ())
        if not _THREE.issuperset(map(len, encoded)):  # zip(*) would drop what is past 3
            raise ValueError("encode_batch made items that are not (id, ts, JSON)")
        ids, stamps, sources = zip(*encoded)
        return Columns(ids, stamps, (sources,))

    return encode_columns


def _whole_ms(ts: Any) -> int:
    """``ts`` as integer epoch milliseconds: a float only when it is a whole number."""
    if ts is None:
        raise RecordError("missing_ts", "the document has no ts (epoch milliseconds)")
    if type(ts) is float and ts.is_integer():
        return int(ts)
    raise RecordError("bad_ts", f"ts must be integer epoch milliseconds, not {ts!r:.100}")


class Chain(Protocol):
    """What the worker needs of :class:`sluice.parser.registry.ParserChain`."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def accepts(self, kind: str) -> bool: ...

    def parse(self, record: Mapping[str, Any]) -> dict[str, Any]: ...


@dataclass
class Delivery:
    """A received message: acked once every action is settled and every letter confirmed."""

    kind: str
    channel: ConsumerChannel
    tag: int
    message_id: Optional[str]
    #: the message body; records are decoded again only to dead-letter one Elasticsearch
    #: refused, so that thousands of decoded records do not stay alive for the GC to scan
    body: bytes = b""
    #: records in the message
    count: int = 0
    #: one ``create`` action (two ndjson lines) per document
    actions: list[bytes] = field(default_factory=list)
    #: index into ``records`` of each action
    positions: list[int] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    #: set once the message was acked or nacked (never answer a delivery twice)
    settled: bool = False
    _records: Optional[list[Any]] = field(default=None, repr=False)

    def record(self, position: int) -> Any:
        """The original record at ``position`` (rare path: decodes the body again)."""
        if self._records is None:
            self._records = msgpack.unpackb(self.body, raw=False, strict_map_key=False)
        return self._records[position]


class MessageDecoder:
    """Decodes messages of every kind with that kind's parser chain."""

    def __init__(
        self, index_prefix: str, chains: Mapping[str, Chain], window: Optional[TsWindow] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: None: any ts an index can hold (tests, replays of old data)
        self._window = window
        self._clock = clock
        self._prefix = index_prefix
        self._chains = dict(chains)
        self._actions: dict[str, dict[int, bytes]] = {kind: {} for kind in chains}
        self._batch_encoders: dict[str, ColumnsEncode] = {}
        for kind, chain in chains.items():
            columns: Optional[ColumnsEncode] = getattr(chain, "encode_columns", None)
            encode: Optional[BatchEncode] = getattr(chain, "encode_batch", None)
            if columns is not None:
                self._batch_encoders[kind] = columns
            elif encode is not None:
                self._batch_encoders[kind] = _as_columns(encode)
        self._rate_limited = RateLimitedLog(log)

    def _action_prefix(self, kind: str, day: int) -> bytes:
        cache = self._actions[kind]
        if len(cache) >= _DAY_CACHE_LIMIT:
            cache.clear()
        index = index_name(self._prefix, kind, day * MS_PER_DAY)
        prefix = action_prefix(index)
        cache[day] = prefix
        return prefix

    def decode(self, kind: str, message: Delivered) -> Delivery:
        body = message.body
        delivery = Delivery(kind, message.channel, message.delivery_tag, message.message_id, body)
        low, high = self._bounds()
        encode = self._batch_encoders.get(kind)
        if encode is not None and self._encode_whole(kind, encode, delivery, low, high):
            return delivery
        try:
            # strict_map_key=False: a record with odd keys is that record's problem (its
            # parser rejects it), not a reason to throw away the whole message.
            records = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            delivery.letters.append(
                DeadLetter(POISON, f"body is not msgpack: {type(exc).__name__}: {exc}", body,
                           "application/octet-stream")
            )
            return delivery
        if not isinstance(records, list):
            delivery.letters.append(
                DeadLetter(POISON, f"body is a msgpack {type(records).__name__}, not an array "
                           "of records", body, "application/octet-stream")
            )
            return delivery
        delivery.count = len(records)
        self._parse_all(kind, records, delivery, low, high)
        return delivery

    def decode_many(self, kind: str, messages: Sequence[Delivered]) -> list[Delivery]:
        """``decode`` of each message, in order; small messages are encoded together.

        A message of a few records costs mostly the fixed steps of a pass (the calls, the
        column set-up), so the small messages of one read from the socket go through
        ``encode_batch`` as one array of all their records, and their actions are then
        split back by message. Each body is first checked to be exactly one msgpack array:
        trailing or missing bytes in one body must not shift records into another.
        Whatever the combined pass declines is decoded message by message, which is what
        says which record was refused, and why.
        """
        encode = self._batch_encoders.get(kind)
        small = [m for m in messages if len(m.body) <= SMALL_BODY]
        if encode is None or len(small) < 2:
            return [self.decode(kind, m) for m in messages]
        together = self._decode_together(kind, encode, small)
        if together is None:
            return [self.decode(kind, m) for m in messages]
        if len(small) == len(messages):
            return together
        in_order = iter(together)
        return [next(in_order) if len(m.body) <= SMALL_BODY else self.decode(kind, m)
                for m in messages]

    def _decode_together(self, kind: str, encode: ColumnsEncode,
                         messages: Sequence[Delivered]) -> Optional[list[Delivery]]:
        try:
            elements = list(map(_ELEMENTS, [m.body for m in messages]))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        counts = list(map(len, elements))
        total = sum(counts)
        header = (bytes([0x90 | total]) if total < 16 else
                  b"\xdc" + total.to_bytes(2, "big") if total < 65536 else
                  b"\xdd" + total.to_bytes(4, "big"))
        low, high = self._bounds()
        actions = self._encode_actions(kind, encode, header + b"".join(map(b"".join, elements)),
                                       low, high, total)
        if actions is None:
            return None
        deliveries = []
        for message, start, count in zip(messages, accumulate([0, *counts]), counts):
            delivery = Delivery(kind, message.channel, message.delivery_tag, message.message_id,
                                message.body, count, actions[start:start + count],
                                list(range(count)))
            deliveries.append(delivery)
        return deliveries

    def _bounds(self) -> tuple[int, int]:
        # One reading of the clock per call: the window moves by a few ms at most.
        return (self._window.bounds(int(self._clock() * 1000)) if self._window is not None
                else (-(2**63), 2**63))

    def _encode_whole(self, kind: str, encode: ColumnsEncode, delivery: Delivery, low: int,
                      high: int) -> bool:
        """The fast path: every record of the message through ``encode_batch``. False,
        with ``delivery`` untouched, when the record-by-record path must decide instead."""
        actions = self._encode_actions(kind, encode, delivery.body, low, high,
                                       _array_length(delivery.body))
        if actions is None:
            return False
        delivery.actions = actions
        delivery.positions = list(range(len(actions)))
        delivery.count = len(actions)
        return True

    def _encode_actions(self, kind: str, encode: ColumnsEncode, payload: bytes, low: int,
                        high: int, records: Optional[int]) -> Optional[list[bytes]]:
        """The actions of every record in ``payload`` (an array of ``records`` records, None:
        not an array) through ``encode_batch``; None when the record-by-record path must
        decide instead."""
        try:
            encoded = encode(payload)
        except Exception as exc:  # a plugin's bug: the slow path still handles the message
            self._rate_limited.warning(
                "encode_batch", "encode_batch_failed", kind=kind, error=repr(exc)
            )
            return None
        if encoded is None:
            return None
        if not isinstance(encoded, Columns) or _length(encoded) != records:
            # One item per record, or the actions cannot be matched to their records.
            self._rate_limited.warning(
                "encode_batch", "encode_batch_failed", kind=kind,
                error=f"encode_batch made {_length(encoded)} items for {records} records",
            )
            return None
        try:
            return self._assemble(kind, encoded, low, high)
        except (TypeError, ValueError) as exc:  # not the documented shape: a plugin's bug
            self._rate_limited.warning(
                "encode_batch", "encode_batch_failed", kind=kind, error=repr(exc)
            )
            return None

    def _assemble(self, kind: str, columns: Columns, low: int,
                  high: int) -> Optional[list[bytes]]:
        """The ``create`` actions of the documents in ``columns``; None when the slow path
        must decide. Checked and built column by column, in C-level passes: each document
        is joined straight into its action."""
        ids, stamps, parts = columns
        count = len(ids)
        if not count:
            return []
        if len(stamps) != count or not parts:
            raise ValueError("encode_columns made columns of different lengths, or no parts")
        documents: list[Iterable[bytes]] = []
        for part in parts:
            if isinstance(part, bytes):
                documents.append(repeat(part))
            elif len(part) == count:  # zip would stop at the shortest, shifting documents
                documents.append(part)
            else:
                raise ValueError(f"encode_columns made a part of {len(part)} items for {count}")
        # What the slow path would refuse, it must be the one to refuse.
        if not (_STR.issuperset(map(type, ids)) and _INT.issuperset(map(type, stamps))):
            return None
        lengths = list(map(len, ids))
        if min(lengths) < 1 or max(lengths) > _MAX_ID_CHARS:
            return None
        first, last = min(stamps), max(stamps)
        if first < low or last > high:
            return None
        day = first // MS_PER_DAY
        prefixes: Iterable[bytes]
        try:
            if day == last // MS_PER_DAY:
                prefixes = repeat(self._prefix_of(kind, day))
            else:  # a message across midnight, or a backfill: a loop per record
                prefixes = [self._prefix_of(kind, ts // MS_PER_DAY) for ts in stamps]
        except ValueError:  # a ts no index can hold: the slow path names it, per record
            return None
        return list(map(b"".join, zip(
            prefixes, map(orjson.dumps, ids), repeat(b"}}\n"), *documents, repeat(b"\n")
        )))

    def _prefix_of(self, kind: str, day: int) -> bytes:
        prefix = self._actions[kind].get(day)
        return prefix if prefix is not None else self._action_prefix(kind, day)

    def _parse_all(self, kind: str, records: list[Any], delivery: Delivery, low: int,
                   high: int) -> None:
        parse = self._chains[kind].parse
        prefixes = self._actions[kind]
        actions, positions, letters = delivery.actions, delivery.positions, delivery.letters
        dumps, join = orjson.dumps, b"".join
        for i, record in enumerate(records):
            try:
                doc = parse(record)
                doc_id = doc.get("id")
                if not isinstance(doc_id, str) or not doc_id:
                    raise RecordError("missing_id", "the document has no string id")
                if len(doc_id) > _MAX_ID_CHARS and len(doc_id.encode("utf-8")) > _MAX_ID_BYTES:
                    raise RecordError(
                        "id_too_long", f"the id is over {_MAX_ID_BYTES} bytes of UTF-8"
                    )
                ts = doc.get("ts")
                # The index comes from the document's ts, never from the time it is
                # processed: a redelivery on another day must meet the first copy's 409.
                if type(ts) is not int:
                    ts = _whole_ms(ts)
                    doc["ts"] = ts
                if not low <= ts <= high:
                    raise TsWindow.refuse(ts, low, high)
                day = ts // MS_PER_DAY
                prefix = prefixes.get(day)
                if prefix is None:
                    prefix = self._action_prefix(kind, day)
                actions.append(join((prefix, dumps(doc_id), b"}}\n", dumps(doc), b"\n")))
                positions.append(i)
            except RecordError as exc:
                letters.append(DeadLetter.for_record(exc.reason, exc.message, record, i))
            except orjson.JSONEncodeError as exc:
                letters.append(DeadLetter.for_record("unserializable", str(exc), record, i))
            except ValueError as exc:  # index_name: a timestamp no index can hold
                letters.append(DeadLetter.for_record("bad_ts", str(exc), record, i))
            except Exception as exc:  # a parser bug must not stop the records behind it
                letters.append(
                    DeadLetter.for_record(
                        "parser_failed", f"{type(exc).__name__}: {exc}", record, i
                    )
                )
