"""The built-in record kind: a sensor measurement.

A measurement is a map::

    id      str, 1..128 chars, unique; made by the client (a UUID), it becomes the
            Elasticsearch document _id, so resends never double a record
    sensor  str, 1..256 chars
    metric  str, 1..256 chars
    value   float (an int is accepted and widened; NaN and infinities are not)
    unit    str, optional
    ts      int, Unix epoch milliseconds
    tags    map of str to str, optional

Its kind, on the wire and in routing keys, is ``measurement``.

The rules exist twice on purpose, side by side here: :func:`validate_measurement` checks
one decoded map and names what is wrong; :class:`MeasurementRecord` is the same schema as
a msgspec ``Struct``, so that a whole message of measurements is decoded and checked in
one C pass. Whatever the struct accepts, the function accepts with the same result (the
parser compliance suite checks this); a message the struct refuses goes through the
function record by record.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType

from .errors import RecordError
from .timestamps import MAX_TS

__all__ = ["MEASUREMENT_KIND", "MeasurementRecord", "validate_measurement"]

MEASUREMENT_KIND = "measurement"
_REQUIRED = ("id", "sensor", "metric", "value", "ts")
_KNOWN = frozenset((*_REQUIRED, "unit", "tags"))
_MAX_ID, _MAX_NAME, _MAX_UNIT = 128, 256, 64


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
    tags: Union[dict[Annotated[str, Meta(min_length=1)], str], UnsetType] = UNSET


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
        out["tags"] = dict(tags)
    return out
