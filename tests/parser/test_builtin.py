"""The built-in parsers: measurement (record -> Elasticsearch document) and uppercase."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.errors import ConfigError, RecordError
from sluice.parser.builtin import MeasurementParser, UppercaseParser
from sluice.timestamps import iso_utc_ms

MAX_TS = 253402300799999  # 9999-12-31T23:59:59.999Z


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "r-1",
        "sensor": "boiler-7",
        "metric": "temperature",
        "value": 21,
        "unit": "C",
        "ts": 1_700_000_000_123,
        "tags": {"site": "north"},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def reference_iso(millis: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


# -- measurement ---------------------------------------------------------------------------


def test_measurement_makes_the_documented_document() -> None:
    parser = MeasurementParser({}, clock=lambda: 1_700_000_100.25)
    assert parser.parse(record()) == {
        "id": "r-1",
        "sensor": "boiler-7",
        "metric": "temperature",
        "value": 21.0,
        "unit": "C",
        "ts": 1_700_000_000_123,
        "tags": {"site": "north"},
        "@timestamp": "2023-11-14T22:13:20.123Z",
        "ingested_at": "2023-11-14T22:15:00.250Z",
        "parser": "measurement",
    }


def test_measurement_widens_int_values_and_keeps_optional_fields_absent() -> None:
    doc = MeasurementParser().parse(record(unit=None, tags=None, value=3))
    assert type(doc["value"]) is float
    assert "unit" not in doc
    assert "tags" not in doc


def test_measurement_ingested_at_is_now() -> None:
    before = int(time.time() * 1000)
    doc = MeasurementParser().parse(record())
    after = int(time.time() * 1000)
    assert reference_iso(before) <= doc["ingested_at"] <= reference_iso(after)


@given(st.lists(st.integers(0, MAX_TS) | st.sampled_from([999, 1000, 1001]), min_size=1, max_size=20))
def test_timestamp_matches_datetime_across_cache_changes(stamps: list[int]) -> None:
    parser = MeasurementParser()
    for ts in stamps:
        assert parser.parse(record(ts=ts))["@timestamp"] == reference_iso(ts)


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (MAX_TS, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_iso_utc_ms(millis: int, text: str) -> None:
    assert iso_utc_ms(millis) == text
    assert MeasurementParser().parse(record(ts=millis))["@timestamp"] == text


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([1, 2], "not_a_map"),
        (record(id=None), "missing_field"),
        (record(value="7"), "bad_value"),
        (record(value=float("nan")), "bad_value"),
        (record(ts=-1), "bad_ts"),
        (record(ts=1.5), "bad_ts"),
        (record(sensor=""), "bad_sensor"),
        (record(tags={"a": 1}), "bad_tags"),
        (record(colour="red"), "unknown_field"),
    ],
)
def test_measurement_rejects_with_a_reason(bad: object, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        MeasurementParser().parse(bad)  # type: ignore[arg-type]
    assert caught.value.reason == reason


@pytest.mark.parametrize("tags", [{"a.b": "x"}, {"site": "north", ".": ""}, {"site.": "x"}])
def test_measurement_refuses_dotted_tag_keys_on_both_paths(tags: dict[str, str]) -> None:
    # The fast path's struct leaves this rule to a check after the decode: a message with
    # one such record among valid ones must be declined, and parse must name the reason.
    parser = MeasurementParser()
    message = msgpack.packb([record(id="r-0"), record(tags=tags), record(id="r-2")])
    assert parser.encode_batch(message) is None
    with pytest.raises(RecordError) as caught:
        parser.parse(record(tags=tags))
    assert caught.value.reason == "bad_tags"
    assert parser.encode_batch(msgpack.packb([record(id="r-0"), record(id="r-2")])) is not None


def test_the_batch_path_cuts_documents_only_where_they_end() -> None:
    # encode_batch encodes a whole message at once and cuts it at each '},{"id":'. Text
    # that spells the cut, in every string and tag a record has, must stay where it is.
    cut = '},{"id":"x"},{'
    records = [
        record(id=f"r-{k}{cut}", sensor=cut, metric=cut + "\\", unit=cut,
               tags={"id": cut, "k" + cut.replace(".", ""): '"},{"id":'}, ts=1_700_000_000_123 + k)
        for k in range(4)
    ] + [record(id="plain", tags=None, unit=None), record(id="last\\")]
    clock = lambda: 1_700_000_000.5  # noqa: E731
    parser = MeasurementParser(clock=clock)
    encoded = parser.encode_batch(msgpack.packb(records))
    assert encoded is not None and len(encoded) == len(records)
    for original, (doc_id, ts, source) in zip(records, encoded):
        doc = MeasurementParser(clock=clock).parse(original)
        assert (doc_id, ts) == (doc["id"], doc["ts"])
        assert json.loads(source) == doc


def test_measurement_does_not_touch_its_input() -> None:
    given_record = record()
    kept = copy.deepcopy(given_record)
    doc = MeasurementParser().parse(given_record)
    doc["tags"]["site"] = "changed"
    assert given_record == kept


def test_measurement_takes_no_options() -> None:
    with pytest.raises(ConfigError, match="does not understand option"):
        MeasurementParser({"fields": "x"})


# -- uppercase -----------------------------------------------------------------------------


def test_uppercase_defaults_to_sensor() -> None:
    doc = UppercaseParser().parse({"sensor": "boiler-7", "metric": "temp", "value": 1.0})
    assert doc == {"sensor": "BOILER-7", "metric": "temp", "value": 1.0}


def test_uppercase_fields_option() -> None:
    parser = UppercaseParser({"fields": " sensor, metric ,"})
    assert parser.fields == ("sensor", "metric")
    assert parser.parse({"sensor": "a", "metric": "b", "unit": "c"}) == {
        "sensor": "A", "metric": "B", "unit": "c",
    }


def test_uppercase_leaves_absent_fields_absent_and_never_mutates() -> None:
    given_doc = {"metric": "temp", "tags": {"site": "north"}}
    kept = copy.deepcopy(given_doc)
    assert UppercaseParser().parse(given_doc) == kept
    assert UppercaseParser({"fields": "metric"}).parse(given_doc)["metric"] == "TEMP"
    assert given_doc == kept


@pytest.mark.parametrize("bad", [None, "sensor", [1], 3])
def test_uppercase_rejects_non_maps(bad: object) -> None:
    with pytest.raises(RecordError) as caught:
        UppercaseParser().parse(bad)  # type: ignore[arg-type]
    assert caught.value.reason == "not_a_map"


def test_uppercase_rejects_non_string_fields() -> None:
    with pytest.raises(RecordError) as caught:
        UppercaseParser({"fields": "sensor,value"}).parse({"sensor": "a", "value": 1.0})
    assert caught.value.reason == "bad_value"


@pytest.mark.parametrize("options", [{"fields": " , "}, {"field": "sensor"}])
def test_uppercase_bad_options(options: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        UppercaseParser(options)
