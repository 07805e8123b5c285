"""The parsers that ship with sluice: ``measurement`` and ``uppercase``.

They are registered in :data:`sluice.parser.registry.BUILTIN`. Both are on the hot path
(a parser process must sustain hundreds of thousands of records per second), hence the
cached timestamp formatting below instead of a ``datetime`` per record, and the measurement
parser's ``encode_columns`` (and ``encode_batch``, made from it): msgspec decodes and
checks a whole message into :class:`~sluice.records.MeasurementRecord` structs and encodes
them all, one C pass each, about six times cheaper than ``parse`` and orjson per record.
Ahead of msgspec runs ``_measurements``, compiled from ``_measurements.c`` where a C
compiler was found: it writes the documents of a plain message (printable ASCII strings,
no escapes) straight from the msgpack bytes, and declines every other message to msgspec.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from itertools import chain, repeat
from operator import attrgetter, floordiv, mod
from typing import Callable, Optional, Union

import msgspec

from ..errors import ConfigError, RecordError
from ..records import MEASUREMENT_KIND, MeasurementRecord, validate_measurement
from ..timestamps import second_text
from .interface import ANY_KIND, Columns, Document, Encoded, Record

__all__ = ["MeasurementParser", "UppercaseParser"]


def _check_options(parser: str, options: Mapping[str, str], allowed: frozenset[str]) -> None:
    # A typo in an option name must stop startup, not be silently ignored.
    unknown = sorted(set(options) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) if allowed else "no options"
        raise ConfigError(
            f"parser {parser!r} does not understand option(s) {', '.join(unknown)} "
            f"(it takes {takes})"
        )


class _MillisFormatter:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ``, remembering the last results.

    Records arrive roughly in time order and the wall clock is read hundreds of times per
    millisecond, so consecutive calls usually repeat the millisecond (the whole string is
    reused) or the second (``gmtime`` is skipped). Several times cheaper than a
    ``datetime`` per call.
    """

    __slots__ = ("_millis", "_second", "_second_text", "_text")

    def __init__(self) -> None:
        self._millis = self._second = -1
        self._text = self._second_text = ""

    def __call__(self, millis: int) -> str:
        if millis == self._millis:
            return self._text
        second, ms = divmod(millis, 1000)
        if second != self._second:
            self._second_text = second_text(second)
            self._second = second
        self._millis = millis
        self._text = f"{self._second_text}.{ms:03d}Z"
        return self._text


# ".000Z" ... ".999Z": the millisecond part of a timestamp, looked up instead of formatted.
_MILLIS = tuple(f".{ms:03d}Z".encode() for ms in range(1000))
_DECODE_MEASUREMENTS = msgspec.msgpack.Decoder(list[MeasurementRecord]).decode
_ENCODE_JSON = msgspec.json.Encoder().encode
try:  # the compiled fast path (_measurements.c); without it, msgspec does it all
    from . import _measurements
except ImportError:  # pragma: no cover - built where a C compiler was found
    _measurements = None  # type: ignore[assignment]
_ID_OF, _TS_OF, _TAGS_OF = attrgetter("id"), attrgetter("ts"), attrgetter("tags")
_BETWEEN = b'},{"id":'
_OPEN_ID = len(b'[{"id":')


class MeasurementParser:
    """Validates a measurement record (:func:`sluice.records.validate_measurement`) and
    makes the Elasticsearch document: the normalized record plus ``@timestamp`` (from
    ``ts``), ``ingested_at`` (now) and ``parser``. Takes no options.
    """

    name = "measurement"
    kinds = frozenset({MEASUREMENT_KIND})

    def __init__(
        self, options: Mapping[str, str] | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        _check_options(self.name, options or {}, frozenset())
        # Separate formatters: record times and the wall clock fall in different seconds,
        # so one shared cache would miss on every call.
        self._timestamp = _MillisFormatter()
        self._now = _MillisFormatter()
        self._clock = clock
        self._stamp: tuple[int, bytes] = (-1, b"")

    def parse(self, record: Record) -> Document:
        doc = validate_measurement(record)  # a new dict: the input is never touched
        doc["@timestamp"] = self._timestamp(doc["ts"])
        doc["ingested_at"] = self._now(int(self._clock() * 1000))
        doc["parser"] = "measurement"
        return doc

    def encode_batch(self, payload: bytes) -> Optional[list[Encoded]]:
        """What ``parse`` makes of every record, as JSON; None unless every record is valid."""
        columns = self.encode_columns(payload)
        if columns is None:
            return None
        parts = [repeat(part) if isinstance(part, bytes) else part for part in columns.parts]
        return list(zip(columns.ids, columns.stamps, map(b"".join, zip(*parts))))

    def encode_columns(self, payload: bytes) -> Optional[Columns]:
        """``encode_batch``'s documents as columns, which the worker joins into its actions.

        Every step below is one C-level pass over the message (``map`` over a C callable,
        ``zip``, ``join``, ``split``), so no Python bytecode runs per record, only per
        distinct second of ``ts``. The three added fields are spliced in where each
        struct's JSON closes (``ingested_at`` is read once per message: its records are
        parsed within a millisecond or two).

        The compiled path, when built, goes first: it makes the same documents (the tests
        compare both ways byte for byte) at 0.43 µs per record against msgspec's 1.1, and
        returns None for anything it cannot decide alone, which msgspec then decides.
        """
        if _measurements is not None:
            found = _measurements.transcode(payload)
            if found is not None:
                ids, stamps, heads, values, rests = found
                if not ids:
                    return Columns([], [], ())
                # The compiled path leaves floats to msgspec: one encode, cut at the
                # commas (a JSON number holds none).
                texts = _ENCODE_JSON(values)[1:-1].split(b",")
                if len(texts) == len(ids):  # cannot differ, but records must not shift
                    return self._columns(ids, stamps, (b'{"id":', heads, texts, rests))
        try:
            records = _DECODE_MEASUREMENTS(payload)
        except msgspec.DecodeError:  # also ValidationError: a record needs its reason
            return None
        except UnicodeDecodeError:  # what msgspec 0.20 raises for a key that is no UTF-8
            return None
        # The struct leaves the no-dot rule for tag keys to here (see sluice.records):
        # every key of the message in one string, and one search. UNSET is falsy.
        if "." in "".join(chain.from_iterable(filter(None, map(_TAGS_OF, records)))):
            return None
        if not records:
            return Columns([], [], ())
        # One encode for the whole message, then cut at each '},{"id":'. Every document
        # starts with '{"id":' (the struct's first field) and a '},' ends a document only
        # (``tags``, the one object inside, is the last field), and no JSON string holds
        # an unescaped quote. One call, one split, and no slice per document to drop its
        # closing brace: together with the splice below, 1.28 -> 1.18 µs per record.
        pieces = _ENCODE_JSON(records)[_OPEN_ID:-2].split(_BETWEEN)
        if len(pieces) != len(records):  # cannot happen, but records must not shift
            return None
        return self._columns(list(map(_ID_OF, records)), list(map(_TS_OF, records)),
                             (b'{"id":', pieces))

    def _columns(self, ids: list[str], stamps: list[int],
                 body: tuple[Union[bytes, list[bytes]], ...]) -> Columns:
        """The columns of documents whose fields are ``body`` (up to the struct's closing
        brace), with the three added fields spliced in where each document closes."""
        now = self._now(int(self._clock() * 1000)).encode()
        tail = b'","ingested_at":"' + now + b'","parser":"measurement"}'
        first = stamps[0]
        if first == min(stamps) == max(stamps):  # one ts: a client's batch, stamped once
            return Columns(ids, stamps, (*body, self._timestamp_field(first) + tail))
        # ``@timestamp`` as two columns: the second's text, then the millisecond's.
        seconds = list(map(floordiv, stamps, repeat(1000)))
        texts = {second: self._second_text(second) for second in set(seconds)}
        return Columns(ids, stamps, (
            *body, b',"@timestamp":"', list(map(texts.__getitem__, seconds)),
            list(map(_MILLIS.__getitem__, map(mod, stamps, repeat(1000)))), tail,
        ))

    def _timestamp_field(self, ts: int) -> bytes:
        """``,"@timestamp":"<ts as ISO 8601>`` (the closing quote is the tail's)."""
        second, ms = divmod(ts, 1000)
        return b',"@timestamp":"' + self._second_text(second) + _MILLIS[ms]

    def _second_text(self, second: int) -> bytes:
        # The last second's text is kept across messages: a message's records, and the
        # next message's, mostly fall in the same second.
        last, text = self._stamp
        if second != last:
            text = second_text(second).encode()
            self._stamp = (second, text)
        return text

    def example(self) -> Document:
        return {
            "id": "0b6f2c1e-4d7a-4f59-9a1e-2f3c4d5e6f70",
            "sensor": "boiler-7",
            "metric": "temperature",
            "value": 71.5,
            "unit": "C",
            "ts": 1_700_000_000_123,
            "tags": {"site": "north"},
        }


class UppercaseParser:
    """Upper-cases some string fields of a document; the example transformation.

    Option ``fields``: comma-separated top-level field names (default ``sensor``). A field
    that is absent stays absent; one that holds something other than a string is refused
    with reason ``bad_<field>``, since upper-casing it silently would hide bad data.
    """

    name = "uppercase"
    kinds = frozenset({ANY_KIND})
    DEFAULT_FIELDS = ("sensor",)

    def __init__(self, options: Mapping[str, str] | None = None) -> None:
        options = options or {}
        _check_options(self.name, options, frozenset({"fields"}))
        if "fields" in options:
            fields = tuple(f.strip() for f in options["fields"].split(",") if f.strip())
            if not fields:
                raise ConfigError("parser 'uppercase': option fields names no field")
        else:
            fields = self.DEFAULT_FIELDS
        self.fields = fields
        # Reasons are metric labels: computed once, from configuration, so they stay few.
        self._checks = tuple((f, f"bad_{f}") for f in fields)

    def parse(self, record: Record) -> Document:
        if not isinstance(record, Mapping):
            raise RecordError("not_a_map", f"a record must be a map, not {type(record).__name__}")
        doc = dict(record)  # shallow copy: only top-level strings are replaced
        for field, reason in self._checks:
            if field in doc:
                value = doc[field]
                if not isinstance(value, str):
                    raise RecordError(reason, f"{field} must be a string to upper-case it")
                doc[field] = value.upper()
        return doc

    def example(self) -> Document:
        return {field: f"{field}-a1" for field in self.fields}
