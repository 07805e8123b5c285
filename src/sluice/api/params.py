"""Query parameters: one declaration per parameter drives both parsing and the OpenAPI
document, so what the handlers accept is exactly what the document says.

Every parse failure raises :class:`ApiError` 400 naming the parameter and what was
expected. Unknown parameters are refused too: a typo such as ``sensors=`` would
otherwise silently widen the query.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..timestamps import MAX_TS, iso_utc_ms
from .responses import ApiError

__all__ = [
    "HISTOGRAM",
    "MAX_REPEAT",
    "MEASUREMENTS",
    "METRICS",
    "PIPELINE",
    "SENSORS",
    "SENSOR_ORDERS",
    "STATS",
    "Filters",
    "Param",
    "decode_cursor",
    "encode_cursor",
    "filters_of",
    "parse_interval",
    "parse_query",
    "parse_time",
]

#: 9999-12-31T23:59:59.999Z, the last instant a record's ``ts`` may hold (see records.py).
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)

# ASCII only: Python's \d would also take other scripts' digits, which int() accepts.
_EPOCH_MS_RE = r"[0-9]{1,15}"
_ISO_RE = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)
_SPACED_RE = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)? [0-9]{2}:?[0-9]{2}"
)
# Relative to the time of the request, as Elasticsearch date math: now, now-15m, now-1h30m,
# now-1d/d (rounded down to the unit, UTC).
_RELATIVE_RE = r"now(?:[+-](?:[0-9]{1,9}[smhdw])+)*(?:/[smhdw])?"
_RELATIVE_STEPS = re.compile(r"([+-])((?:[0-9]{1,9}[smhdw])+)")
_RELATIVE_PARTS = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_MS_RELATIVE = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
TIME_PATTERN = f"^(?:{_EPOCH_MS_RE}|{_ISO_RE}|{_SPACED_RE}|{_RELATIVE_RE})$"
_ISO_PARTS = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?\Z"
)

# A date and time followed by " HH:MM" (or " HHMM"): a "+" offset that lost its "+".
_SPACED_OFFSET = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)"
    r" ([0-9]{2}:?[0-9]{2})\Z"
)

INTERVAL_PATTERN = "^[1-9][0-9]{0,5}[smhd]$"
_INTERVAL_RE = re.compile(r"([1-9][0-9]{0,5})([smhd])\Z")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

CURSOR_PATTERN = "^[A-Za-z0-9_-]{1,2048}$"
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,2048}\Z")

#: How many times a repeatable parameter (``tag``) may be given.
MAX_REPEAT = 32

_TEXT_LIMIT = 256  # sensor and metric names, as records.py allows
TAG_PATTERN = "^[^:\\x00-\\x1f\\x7f]{1,256}:[\\s\\S]{0,1024}$"
_TAG_KEY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")

SENSOR_ORDER_FIELDS = ("count", "avg", "min", "max", "last_seen", "sensor")
SENSOR_ORDERS = tuple(f"{f}:{d}" for f in SENSOR_ORDER_FIELDS for d in ("desc", "asc"))

Parser = Callable[[str, str], Any]


@dataclass(frozen=True)
class Param:
    """One query parameter: how it is parsed and how OpenAPI describes it."""

    name: str
    description: str
    schema: Mapping[str, Any]
    parse: Parser
    repeatable: bool = False
    default: Any = None
    example: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# -- value parsers -------------------------------------------------------------------------


def _text(name: str, raw: str) -> str:
    if not raw:
        raise ApiError.bad_parameter(name, "expected a non-empty string")
    if len(raw) > _TEXT_LIMIT:
        raise ApiError.bad_parameter(name, f"expected at most {_TEXT_LIMIT} characters")
    return raw


def _relative(raw: str, now_ms: int) -> int:
    """``now-1h`` and friends against ``now_ms``; the pattern was checked by the caller."""
    ms = now_ms
    body, _, rounding = raw[3:].partition("/")
    for sign, parts in _RELATIVE_STEPS.findall(body):
        step = sum(int(n) * _UNIT_MS_RELATIVE[unit] for n, unit in _RELATIVE_PARTS.findall(parts))
        ms = ms + step if sign == "+" else ms - step
    if rounding:
        if rounding == "w":  # weeks start on Monday, as in Elasticsearch; 1970-01-01 was a Thursday
            ms -= (ms + 3 * 86_400_000) % _UNIT_MS_RELATIVE["w"]
        else:
            ms -= ms % _UNIT_MS_RELATIVE[rounding]
    return ms


def parse_time(name: str, raw: str, now_ms: Optional[int] = None) -> int:
    """ISO 8601 (``2026-11-28``, ``2026-11-28T10:00:00Z``, offsets, no zone = UTC), epoch
    milliseconds, or relative to now (``now``, ``now-15m``, ``now-1h``, ``now-1d/d``) ->
    epoch milliseconds."""
    expected = ("expected ISO 8601 (e.g. 2026-11-28T10:00:00Z), epoch milliseconds or a time "
                "relative to now (now, now-15m, now-1h, now-7d/d)")
    if re.fullmatch(_RELATIVE_RE, raw, re.ASCII):
        ms = _relative(raw, int(_time.time() * 1000) if now_ms is None else now_ms)
        if not 0 <= ms <= MAX_TS:
            raise ApiError.bad_parameter(name, f"{raw!r} is outside 1970 to 9999")
        return ms
    # A "+" typed unencoded in a URL arrives as a space: "...T10:00:00 01:00" is +01:00.
    spaced = _SPACED_OFFSET.match(raw)
    if spaced is not None:
        raw = f"{spaced.group(1)}+{spaced.group(2)}"
    if re.fullmatch(_EPOCH_MS_RE, raw, re.ASCII):
        ms = int(raw)
    else:
        m = _ISO_PARTS.match(raw)
        if m is None:
            raise ApiError.bad_parameter(name, f"{expected}, got {raw!r}")
        year, month, day, hour, minute, second, frac, zone = m.groups()
        tz = _dt.timezone.utc
        try:
            if zone and zone != "Z":
                digits = zone[1:].replace(":", "")
                offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
                tz = _dt.timezone(-offset if zone[0] == "-" else offset)
            micro = int((frac or "0")[:6].ljust(6, "0"))
            moment = _dt.datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                int(second or 0), micro, tzinfo=tz,
            )
            ms = (moment - _EPOCH) // _MS
        except (ValueError, OverflowError) as exc:
            raise ApiError.bad_parameter(name, f"{expected}; {raw!r} is not a valid time ({exc})") from exc
    if not 0 <= ms <= MAX_TS:
        raise ApiError.bad_parameter(
            name, "expected a time between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z"
        )
    return ms


def _int_in(low: int, high: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]{1,12}", raw, re.ASCII):
            raise ApiError.bad_parameter(name, f"expected an integer from {low} to {high}, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ApiError.bad_parameter(name, f"expected an integer from {low} to {high}, got {value}")
        return value

    return parse


def _choice(choices: Sequence[str]) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ApiError.bad_parameter(name, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _boolean(name: str, raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ApiError.bad_parameter(name, f"expected true or false, got {raw!r}")
    return raw == "true"


def _pretty(name: str, raw: str) -> bool:
    if raw not in ("", "true", "false"):
        raise ApiError.bad_parameter(name, f"expected no value, true or false, got {raw!r}")
    return raw != "false"


def _tag(name: str, raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition(":")
    if not sep or not key:
        raise ApiError.bad_parameter(name, f"expected key:value (e.g. site:lab), got {raw!r}")
    if len(key) > _TEXT_LIMIT or _TAG_KEY_FORBIDDEN.search(key):
        raise ApiError.bad_parameter(
            name, f"expected a tag name of at most {_TEXT_LIMIT} printable characters"
        )
    if len(value) > 1024:
        raise ApiError.bad_parameter(name, "expected a tag value of at most 1024 characters")
    return key, value


def parse_interval(name: str, raw: str) -> int:
    m = _INTERVAL_RE.match(raw)
    if m is None:
        raise ApiError.bad_parameter(
            name, f"expected a number and a unit s, m, h or d (e.g. 30s, 5m, 1h, 1d), got {raw!r}"
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def encode_cursor(sort_values: Sequence[Any]) -> str:
    raw = json.dumps(list(sort_values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(name: str, raw: str) -> list[Any]:
    problem = "expected a cursor returned as next_cursor by this endpoint"
    if not _CURSOR_RE.match(raw):
        raise ApiError.bad_parameter(name, problem)
    try:
        values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ApiError.bad_parameter(name, problem) from exc
    ok = (
        isinstance(values, list)
        and len(values) == 2
        and isinstance(values[0], int)
        and not isinstance(values[0], bool)
        and 0 <= values[0] <= MAX_TS
        and isinstance(values[1], str)
    )
    if not ok:
        raise ApiError.bad_parameter(name, problem)
    return [values[0], values[1]]


# -- declarations --------------------------------------------------------------------------

_TIME_SCHEMA = {"type": "string", "pattern": TIME_PATTERN}
_RELATIVE_NOTE = (" Relative times use Elasticsearch's date math: `now`, `now-15m`, `now-1h`, "
                  "`now-1h30m`, `now-7d`, units `s m h d w`, and an optional rounding down to a "
                  "unit in UTC (`now-1d/d` is the start of yesterday). Answers echo the resolved "
                  "time in `filters`.")
_SPACE_NOTE = (" A `+HH:MM` offset sent unencoded arrives as a space; `<date>T<time> HH:MM` "
               "is therefore read as `+HH:MM` (encode `+` as `%2B` to be exact).")

PRETTY = Param(
    "pretty", "Indent the JSON answer (`?pretty` alone is enough).",
    {"type": "string", "enum": ["", "true", "false"]}, _pretty, default=False,
    extra={"allowEmptyValue": True},
)
FILTERS: tuple[Param, ...] = (
    Param("metric", "Only measurements of this metric.",
          {"type": "string", "minLength": 1, "maxLength": _TEXT_LIMIT}, _text, example="temperature"),
    Param("sensor", "Only measurements from this sensor.",
          {"type": "string", "minLength": 1, "maxLength": _TEXT_LIMIT}, _text, example="sensor-0001"),
    Param("from", "Start of the time range, inclusive: ISO 8601 (no zone means UTC), epoch "
          f"milliseconds, or relative to the time of the request.{_RELATIVE_NOTE}{_SPACE_NOTE}",
          _TIME_SCHEMA, parse_time, example="now-1h"),
    Param("to", "End of the time range, exclusive: ISO 8601 (no zone means UTC), epoch "
          f"milliseconds, or relative to the time of the request.{_RELATIVE_NOTE}{_SPACE_NOTE}",
          _TIME_SCHEMA, parse_time, example="now"),
    Param("tag", "Only measurements carrying this tag, as `key:value`; repeat for several "
          f"(all must match), at most {MAX_REPEAT} times.",
          {"type": "array", "maxItems": MAX_REPEAT, "items": {"type": "string", "pattern": TAG_PATTERN}},
          _tag, repeatable=True, example=["site:lab"]),
)


def _size(default: int, high: int) -> Param:
    return Param("size", f"How many items to return (1 to {high}).",
                 {"type": "integer", "minimum": 1, "maximum": high, "default": default},
                 _int_in(1, high), default=default)


STATS: tuple[Param, ...] = (*FILTERS, PRETTY)
METRICS: tuple[Param, ...] = STATS
SENSORS: tuple[Param, ...] = (
    *FILTERS,
    _size(20, 1000),
    Param("order", "Sort key and direction of the sensors.",
          {"type": "string", "enum": list(SENSOR_ORDERS), "default": "count:desc"},
          _choice(SENSOR_ORDERS), default="count:desc"),
    Param("per_metric", "Also break each sensor down per metric.",
          {"type": "boolean", "default": False}, _boolean, default=False),
    PRETTY,
)
HISTOGRAM: tuple[Param, ...] = (
    *FILTERS,
    Param("interval", "Bucket width: a number and a unit s, m, h or d. Without it, a width "
          "giving about 60 buckets over the time range is chosen.",
          {"type": "string", "pattern": INTERVAL_PATTERN}, parse_interval, example="5m"),
    PRETTY,
)
MEASUREMENTS: tuple[Param, ...] = (
    *FILTERS,
    _size(100, 1000),
    Param("cursor", "Continue after the last item of a previous page: that page's "
          "`next_cursor`.", {"type": "string", "pattern": CURSOR_PATTERN}, decode_cursor),
    PRETTY,
)
PIPELINE: tuple[Param, ...] = (
    Param("minutes", "Length of the ingest-rate window, in minutes (1 to 60).",
          {"type": "integer", "minimum": 1, "maximum": 60, "default": 10},
          _int_in(1, 60), default=10),
    PRETTY,
)
PLAIN: tuple[Param, ...] = (PRETTY,)


def parse_query(query: Mapping[str, str], params: Sequence[Param]) -> dict[str, Any]:
    """Parse ``query`` (a multidict) against ``params``; absent ones take their default."""
    known = {p.name: p for p in params}
    getall = getattr(query, "getall", None)
    out: dict[str, Any] = {p.name: ([] if p.repeatable else p.default) for p in params}
    for name in dict.fromkeys(query):  # each name once, in order
        if name == "" and not any(getall(name) if getall is not None else [query[name]]):
            continue  # a stray "&" (some URL parsers report it as an empty pair)
        param = known.get(name)
        if param is None:
            accepted = ", ".join(sorted(known)) or "none"
            raise ApiError(400, "unknown_parameter",
                           f"unknown parameter '{name}'; this endpoint accepts: {accepted}", param=name)
        raws: list[str] = list(getall(name)) if getall is not None else [query[name]]
        if param.repeatable and len(raws) > MAX_REPEAT:
            raise ApiError.bad_parameter(
                name, f"given {len(raws)} times; expected at most {MAX_REPEAT}")
        if param.repeatable:
            out[name] = [param.parse(name, raw) for raw in raws]
        elif len(raws) > 1:
            raise ApiError.bad_parameter(name, f"given {len(raws)} times; expected it once")
        else:
            out[name] = param.parse(name, raws[0])
    return out


@dataclass(frozen=True)
class Filters:
    """The filters every data endpoint shares; ``start`` inclusive, ``end`` exclusive."""

    metric: Optional[str] = None
    sensor: Optional[str] = None
    start: Optional[int] = None
    end: Optional[int] = None
    tags: tuple[tuple[str, str], ...] = ()

    def describe(self) -> dict[str, Any]:
        """The filters as echoed in answers (times as ISO 8601)."""
        return {
            "metric": self.metric,
            "sensor": self.sensor,
            "from": iso_utc_ms(self.start) if self.start is not None else None,
            "to": iso_utc_ms(self.end) if self.end is not None else None,
            "tags": [f"{k}:{v}" for k, v in self.tags],
        }


def filters_of(values: Mapping[str, Any]) -> Filters:
    start, end = values.get("from"), values.get("to")
    if start is not None and end is not None and start > end:
        raise ApiError.bad_parameter("from", "expected a time at or before 'to'")
    return Filters(
        metric=values.get("metric"),
        sensor=values.get("sensor"),
        start=start,
        end=end,
        tags=tuple(values.get("tag") or ()),
    )
