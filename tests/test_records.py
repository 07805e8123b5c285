from __future__ import annotations

import pytest

from sluice.errors import RecordError
from sluice.records import MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, validate_measurement

GOOD = {"id": "a1", "sensor": "s-1", "metric": "temp", "value": 21, "ts": 1_700_000_000_000,
        "unit": "C", "tags": {"site": "lab"}}


def test_valid_record_is_normalized_and_copied() -> None:
    out = validate_measurement(GOOD)
    assert out == {**GOOD, "value": 21.0}
    assert isinstance(out["value"], float)
    assert out is not GOOD and out["tags"] is not GOOD["tags"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"value": "21"}, "bad_value"),
    ({"value": float("nan")}, "bad_value"),
    ({"value": True}, "bad_value"),
    ({"ts": 1.5}, "bad_ts"),
    ({"ts": -1}, "bad_ts"),
    ({"sensor": ""}, "bad_sensor"),
    ({"tags": {"a": 1}}, "bad_tags"),
    ({"extra": 1}, "unknown_field"),
    ({"tags": {"site.x": "a"}}, "bad_tags"),  # a dot would clash with "site" in the mapping
    ({"tags": {"k" * (MAX_TAG_KEY + 1): "a"}}, "bad_tags"),
    ({"tags": {"site": "v" * (MAX_TAG_VALUE + 1)}}, "bad_tags"),
    ({"tags": {f"t{i}": "v" for i in range(MAX_TAGS + 1)}}, "bad_tags"),
])
def test_bad_fields_are_rejected_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(RecordError) as info:
        validate_measurement({**GOOD, **change})
    assert info.value.reason == reason


def test_missing_fields_and_non_maps() -> None:
    with pytest.raises(RecordError, match="missing id"):
        validate_measurement({k: v for k, v in GOOD.items() if k != "id"})
    with pytest.raises(RecordError) as info:
        validate_measurement([1, 2])
    assert info.value.reason == "not_a_map"


def test_tags_at_every_cap_are_accepted() -> None:
    tags = {f"{i:02d}" + "k" * (MAX_TAG_KEY - 2): "v" * MAX_TAG_VALUE for i in range(MAX_TAGS)}
    assert validate_measurement({**GOOD, "tags": tags})["tags"] == tags
