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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import RecordError
from .timestamps import MAX_TS

__all__ = ["MEASUREMENT_KIND", "validate_measurement"]

MEASUREMENT_KIND = "measurement"
_REQUIRED = ("id", "sensor", "metric", "value", "ts")
_KNOWN = frozenset((*_REQUIRED, "unit", "tags"))


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
        "id": _text(record, "id", 128),
        "sensor": _text(record, "sensor", 256),
        "metric": _text(record, "metric", 256),
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
        out["unit"] = _text(record, "unit", 64)
    if "tags" in record:
        tags = record["tags"]
        if not isinstance(tags, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in tags.items()
        ):
            raise RecordError("bad_tags", "tags must be a map of non-empty strings to strings")
        out["tags"] = dict(tags)
    return out
