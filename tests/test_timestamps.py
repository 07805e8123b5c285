from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from sluice.timestamps import MAX_TS, MS_PER_DAY, iso_utc_ms


@given(st.integers(min_value=0, max_value=MAX_TS))
def test_iso_utc_ms_matches_datetime(millis: int) -> None:
    """The hand-made format equals datetime's (zero-padded year, millisecond fraction, Z)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=millis)
    expected = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
                f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z")
    assert iso_utc_ms(millis) == expected


def test_bounds() -> None:
    assert iso_utc_ms(MAX_TS) == "9999-12-31T23:59:59.999Z"
    assert iso_utc_ms(MS_PER_DAY) == "1970-01-02T00:00:00.000Z"
    assert iso_utc_ms(0) == "1970-01-01T00:00:00.000Z"
