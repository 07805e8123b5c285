"""Parameter parsing and interval choice, without a store."""

from __future__ import annotations

import re

import pytest
from multidict import MultiDict

from sluice.api import params, queries
from sluice.api.params import decode_cursor, encode_cursor, parse_query, parse_time
from sluice.api.responses import ApiError
from sluice.timestamps import MAX_TS

DAY = 86_400_000


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        ("0", 0),
        ("1795132800000", 1_795_132_800_000),
        ("2026-11-20", 1_795_132_800_000),
        ("2026-11-20T00:00:00Z", 1_795_132_800_000),
        ("2026-11-20T00:00Z", 1_795_132_800_000),
        ("2026-11-20 00:00:00", 1_795_132_800_000),
        ("2026-11-20T01:30:00+01:30", 1_795_132_800_000),
        ("2026-11-19T22:00:00-0200", 1_795_132_800_000),
        ("2026-11-20T00:00:00.123Z", 1_795_132_800_123),
        ("2026-11-20T00:00:00,5Z", 1_795_132_800_500),
        ("2026-11-20T00:00:00.123456789Z", 1_795_132_800_123),
        ("9999-12-31T23:59:59.999Z", MAX_TS),
        # "+01:30" typed unencoded in a URL: the "+" arrives as a space.
        ("2026-11-20T01:30:00 01:30", 1_795_132_800_000),
        ("2026-11-20T01:30 0130", 1_795_132_800_000),
        ("2026-11-20 01:30:00.000 01:30", 1_795_132_800_000),
    ],
)
def test_times(raw, ms):
    assert parse_time("from", raw) == ms


@pytest.mark.parametrize(
    "raw",
    ["", "now-", "now-1x", "now-1M", "now - 1h", "now-1h/", "now/q", "Now", "now-9999999999d",
     "2026-1-1", "2026-11-20T", "2026-11-20T10", "2026/11/20", "1e12", "-1", "٣",
     "2026-11-20T00:00:00+25:00", "1969-12-31T23:59:59Z", "0000-01-01", "2026-11-20Z",
     "2026-11-20T00:00:00.Z", "1234567890123456", "2026-11-20T01:30:00  01:30",
     "2026-11-20T01:30:00 25:00", "2026-11-20 01:30Z 01:00"],
)
def test_bad_times(raw):
    with pytest.raises(ApiError) as err:
        parse_time("from", raw)
    assert err.value.status == 400 and "'from'" in err.value.message


NOW = 1_795_137_723_456  # 2026-11-20T01:22:03.456Z, a Friday


@pytest.mark.parametrize(("raw", "ms"), [
    ("now", NOW), ("now-15m", NOW - 15 * 60_000), ("now-1h", NOW - 3_600_000),
    ("now-1h30m", NOW - 5_400_000), ("now+5s", NOW + 5_000), ("now-7d", NOW - 7 * DAY),
    ("now-1h-30m", NOW - 5_400_000), ("now/d", 1_795_132_800_000), ("now-1d/d", 1_795_132_800_000 - DAY),
    ("now/h", 1_795_136_400_000), ("now/w", 1_795_132_800_000 - 4 * DAY),  # Monday 2026-11-16
])
def test_relative_times(raw, ms):
    """Elasticsearch-style date math against a fixed now, and the pattern OpenAPI shows."""
    assert parse_time("from", raw, now_ms=NOW) == ms
    assert re.match(params.TIME_PATTERN, raw)


def test_relative_times_use_the_clock():
    import time

    before = int(time.time() * 1000)
    got = parse_time("from", "now-1h")
    after = int(time.time() * 1000)
    assert before - 3_600_000 <= got <= after - 3_600_000


def test_every_accepted_time_matches_the_documented_pattern():
    pattern = re.compile(params.TIME_PATTERN)
    for raw in ["0", "2026-11-20", "2026-11-20T00:00:00.123+01:00", "2026-11-20 10:00",
                "2026-11-20T10:00:00 01:00", "2026-11-20 10:00 0100"]:
        parse_time("to", raw)
        assert pattern.match(raw)


def test_cursor_round_trip():
    for values in ([0, ""], [MAX_TS, "x" * 128], [1, "ünï/cødé\"'"]):
        encoded = encode_cursor(values)
        assert re.fullmatch(params.CURSOR_PATTERN, encoded)
        assert decode_cursor("cursor", encoded) == values


def test_query_parsing():
    got = parse_query(MultiDict([("tag", "a:b"), ("tag", "c:d:e"), ("size", "5"), ("pretty", "")]),
                      params.MEASUREMENTS)
    assert got["tag"] == [("a", "b"), ("c", "d:e")]
    assert got["size"] == 5 and got["pretty"] is True and got["cursor"] is None and got["metric"] is None
    assert parse_query(MultiDict(), params.SENSORS)["order"] == "count:desc"


def test_repeated_tags_are_capped():
    many = [("tag", f"k{i}:v") for i in range(params.MAX_REPEAT)]
    assert len(parse_query(MultiDict(many), params.STATS)["tag"]) == params.MAX_REPEAT
    with pytest.raises(ApiError) as err:
        parse_query(MultiDict([*many, ("tag", "one:more")]), params.STATS)
    assert err.value.status == 400 and "'tag'" in err.value.message
    assert f"at most {params.MAX_REPEAT}" in err.value.message


def test_per_metric_size_stays_within_max_buckets():
    limit = queries.max_sensors(True)
    assert limit * (1 + queries.METRICS_PER_SENSOR) <= queries.ES_MAX_BUCKETS
    assert (limit + 1) * (1 + queries.METRICS_PER_SENSOR) > queries.ES_MAX_BUCKETS
    assert queries.max_sensors(False) >= 1000


@pytest.mark.parametrize(
    ("span", "expected"),
    [(0, 1_000), (59_000, 1_000), (60_001, 2_000), (3_600_000, 60_000), (DAY, 30 * 60_000),
     (3 * DAY, 2 * 3_600_000), (365 * DAY, 7 * DAY), (1000 * 365 * DAY, 6084 * DAY)],
)
def test_chosen_interval(span, expected):
    assert queries.choose_interval(span) == expected
    assert queries.bucket_count(0, span, expected) <= queries.AUTO_BUCKETS + 1


def test_bucket_count_and_format():
    assert queries.bucket_count(0, 1, 1000) == 1
    assert queries.bucket_count(999, 1001, 1000) == 2
    assert queries.bucket_count(5, 5, 1000) == 0
    assert [queries.format_interval(ms) for ms in (1000, 90_000, 7_200_000, DAY)] == ["1s", "90s", "2h", "1d"]
