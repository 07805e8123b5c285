"""The built-in record kind: a sensor measurement.

A measurement is a map::

    id      str, 1..128 chars, unique; made by the client (a UUID), it becomes the
            Elasticsearch document _id, so resends never double a record
    sensor  str, 1..256 chars
    metric  str, 1..256 chars
    value   float (an int is accepted and widened; NaN and infinities are not)
    unit    str, optional
    ts      int, Unix epoch milliseconds
    tags    map of str to str, optional: at most MAX_TAGS, keys 1..MAX_TAG_KEY characters
            without dots (``site`` and ``site.x`` would clash in the mapping), values up to
            MAX_TAG_VALUE characters

Its kind, on the wire and in routing keys, is ``measurement``. ``docs/records.md`` is the
normative description, with the id rules and the ``ts`` window (:class:`TsWindow`), which
the parser applies to every kind since a document's ``ts`` picks its daily index.


The rules exist twice on purpose, side by side here: :func:`validate_measurement` checks
one decoded map and names what is wrong; :class:`MeasurementRecord` is the same schema as
a msgspec ``Struct``, so that a whole message of measurements is decoded and checked in
one C pass. Whatever the struct accepts, the function accepts with the same result (the
parser compliance suite checks this); a message the struct refuses goes through the
function record by record. One rule is left out of the struct: that a tag key holds no
``.``. As a ``pattern``, msgspec would call a regular expression once per key, which
doubled the decode's cost; ``MeasurementParser.encode_batch`` checks it after the decode.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .errors import RecordError
from .timestamps import MAX_TS, MS_PER_DAY

__all__ = [
    "MAX_TAGS",
    "MAX_TAG_KEY",
    "MAX_TAG_VALUE",
    "MEASUREMENT_KIND",
    "TS_OUT_OF_RANGE",
    "MeasurementRecord",
    "TsWindow",
    "validate_measurement",
]

MEASUREMENT_KIND = "measurement"
_REQUIRED = ("id", "sensor", "metric", "value", "ts")
_KNOWN = frozenset((*_REQUIRED, "unit", "tags"))
#: tags are mapped one keyword field each: these caps bound the mapping's growth
MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
#: the dead-letter reason of a record whose ts is outside the window
TS_OUT_OF_RANGE = "ts_out_of_range"


@dataclass(frozen=True)
class TsWindow:
    """The ``ts`` a record may have, relative to now: each day seen creates a daily index,
    so a window keeps a stray 1970 or 9999 from creating indices (and shards) without end.
    0 means no bound on that side."""

    max_age_days: float = 30.0
    max_ahead_days: float = 1.0

    def bounds(self, now_ms: int) -> tuple[int, int]:
        """The accepted ``ts`` range, both ends included, at ``now_ms``."""
        low = now_ms - int(self.max_age_days * MS_PER_DAY) if self.max_age_days else 0
        high = now_ms + int(self.max_ahead_days * MS_PER_DAY) if self.max_ahead_days else MAX_TS
        return low, high

    @staticmethod
    def refuse(ts: int, low: int, high: int) -> RecordError:
        side = "older than the window allows" if ts < low else "too far in the future"
        return RecordError(TS_OUT_OF_RANGE,
                           f"ts {ts} is {side} (accepted now: {low}..{high} epoch ms)")


_MAX_ID, _MAX_NAME, _MAX_UNIT = 128, 256, 64


# No ``pattern`` for the no-dot rule: see the module's docstring.
_TagKey = Annotated[str, Meta(min_length=1, max_length=MAX_TAG_KEY)]
_TagValue = Annotated[str, Meta(max_length=MAX_TAG_VALUE)]


class MeasurementRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A valid measurement, as msgspec decodes it; fields in the order documents use.

    The bounds on ``value`` refuse NaN and the infinities; an int is widened to float
    and a bool refused, as in :func:`validate_measurement`. Absent optional fields stay
    UNSET, which msgspec leaves out when encoding. ``gc=False``: it holds only strings,
    numbers and a dict of strings, so it can be in no reference cycle, and thousands of
    them per message need not be tracked by the garbage collector.
    """

    id: Annotated[str, Meta(min_length=1, max_length=_MAX_ID)]
    sensor: Annotated[str, Meta(min_length=1, max_length=_MAX_NAME)]
    metric: Annotated[str, Meta(min_length=1, max_length=_MAX_NAME)]
    value: Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
    ts: Annotated[int, Meta(ge=0, le=MAX_TS)]
    unit: Union[Annotated[str, Meta(min_length=1, max_length=_MAX_UNIT)], UnsetType] = UNSET
    tags: Union[Annotated[dict[_TagKey, _TagValue], Meta(max_length=MAX_TAGS)],
                UnsetType] = UNSET


def _text(record: Mapping[str, Any], name: str, limit: int) -> str:
    value = record[name]
    if not isinstance(value, str) or not value:
        raise RecordError(f"bad_{name}", f"{name} must be a non-empty string")
    if len(value) > limit:
        raise RecordError(f"bad_{name}", f"{name} is longer than {limit} characters")
    return value


def validate_measurement(record: Any) -> dict[str, Any]:
    """A checked, normalized copy of a measurement; raises RecordError with a reason slug.

    Normalization: ``value`` becomes a float; absent ``unit``/``tags`` stay absent.
    Unknown fields are refused so that typos do not silently vanish.
    """
    if not isinstance(record, Mapping):
        raise RecordError("not_a_map", f"a record must be a map, not {type(record).__name__}")
    missing = [name for name in _REQUIRED if name not in record]
    if missing:
        raise RecordError("missing_field", f"missing {', '.join(missing)}")
    unknown = sorted(str(k) for k in record if k not in _KNOWN)
    if unknown:
        raise RecordError("unknown_field", f"unknown field(s) {', '.join(unknown)}")
    out: dict[str, Any] = {
        "id": _text(record, "id", _MAX_ID),
        "sensor": _text(record, "sensor", _MAX_NAME),
        "metric": _text(record, "metric", _MAX_NAME),
    }
    value = record["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError("bad_value", "value must be a number")
    try:
        value = float(value)
    except OverflowError as exc:
        raise RecordError("bad_value", "value is out of range for a double") from exc
    if not math.isfinite(value):
        raise RecordError("bad_value", "value must be finite")
    out["value"] = value
    ts = record["ts"]
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_TS:
        raise RecordError("bad_ts", "ts must be an integer of Unix epoch milliseconds")
    out["ts"] = ts
    if "unit" in record:
        out["unit"] = _text(record, "unit", _MAX_UNIT)
    if "tags" in record:
        tags = record["tags"]
        if not isinstance(tags, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in tags.items()
        ):
            raise RecordError("bad_tags", "tags must be a map of non-empty strings to strings")
        _check_tags(tags)
        out["tags"] = dict(tags)
    return out


def _check_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise RecordError("bad_tags", f"{len(tags)} tags; at most {MAX_TAGS} are accepted")
    for key, value in tags.items():
        if len(key) > MAX_TAG_KEY or "." in key:
            raise RecordError("bad_tags", f"tag key {key[:MAX_TAG_KEY]!r} must be 1..{MAX_TAG_KEY} "
                              "characters without dots")
        if len(value) > MAX_TAG_VALUE:
            raise RecordError("bad_tags", f"tag {key!r} is longer than {MAX_TAG_VALUE} characters")
