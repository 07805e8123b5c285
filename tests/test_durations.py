"""Durations as typed on a command line or in an environment variable."""

from __future__ import annotations

import pytest

from sluice.durations import format_duration, parse_duration
from sluice.errors import ConfigError
from sluice.settings import Seconds, _parse


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("0.5", 0.5), ("0", 0.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0),
    ("1h", 3600.0), ("2d", 172_800.0), ("250ms", 0.25), ("1m30s", 90.0), ("1.5h", 5400.0),
    (" 5M ", 300.0), ("1h0m5s", 3605.0),
])
def test_accepted(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 30m", "-5s", "five", "1e3", "s", "5m-"])
def test_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="90s, 5m, 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 1.0, 59.5, 90.0, 3600.0, 5400.0, 93784.0])
def test_format_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_a_seconds_setting_reads_durations_and_names_the_setting() -> None:
    assert _parse("1h30m", Seconds, "--duration") == 5400.0
    with pytest.raises(ConfigError, match="--duration"):
        _parse("soon", Seconds, "--duration")
