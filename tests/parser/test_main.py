"""``sluice parser`` settings and per-kind parser chains."""

from __future__ import annotations

import argparse

import pytest

from sluice.errors import ConfigError
from sluice.parser.main import add_arguments, build_chains
from sluice.parser.settings import ParserSettings
from sluice.settings import load


def test_one_chain_applies_to_every_kind_it_accepts() -> None:
    chains = build_chains("uppercase", ["measurement", "other"], {"uppercase.fields": "unit"})
    assert {kind: chain.names for kind, chain in chains.items()} == {
        "measurement": ("uppercase",), "other": ("uppercase",)
    }


def test_per_kind_chains_with_a_default_for_the_rest() -> None:
    chains = build_chains(
        "measurement=measurement,uppercase; uppercase", ["measurement", "other"],
        {"uppercase.fields": "sensor,metric"},
    )
    assert chains["measurement"].names == ("measurement", "uppercase")
    assert chains["other"].names == ("uppercase",)
    doc = chains["measurement"].parse(
        {"id": "a", "sensor": "s", "metric": "m", "value": 1, "ts": 0}
    )
    assert (doc["sensor"], doc["metric"]) == ("S", "M")


@pytest.mark.parametrize(
    ("spec", "kinds", "options", "message"),
    [
        ("measurement,nope", ["measurement"], {}, "known parsers: "),
        ("measurement", ["other"], {}, "does not accept kind 'other'"),
        ("measurement=measurement", ["measurement", "other"], {}, "no parser chain for kind"),
        ("measurement", ["measurement"], {"uppercase.fields": "x"}, "uppercase.fields"),
    ],
)
def test_bad_chains_stop_startup(
    spec: str, kinds: list[str], options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_chains(spec, kinds, options)


def test_settings_from_environment_and_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--bulk-size", "250", "--parser-option", "uppercase.fields=unit"])
    settings = load(ParserSettings, args, {
        "SLUICE_KINDS": "measurement, other", "SLUICE_PARSERS": "uppercase",
        "SLUICE_PREFETCH": "7", "SLUICE_BULK_SIZE": "999",
    })
    assert settings.kinds == ("measurement", "other")
    assert (settings.parsers, settings.prefetch, settings.bulk_size) == ("uppercase", 7, 250)
    assert args.parser_option == ["uppercase.fields=unit"]


@pytest.mark.parametrize(
    "environ",
    [{"SLUICE_BULK_SIZE": "0"}, {"SLUICE_KINDS": "Bad-Kind"}, {"SLUICE_RETRY_CAP": "0"},
     {"SLUICE_KINDS": ""}, {"SLUICE_PREFETCH": "65536"}, {"SLUICE_PREFETCH_RECORDS": "0"}],
)
def test_invalid_settings_are_config_errors(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load(ParserSettings, None, environ)
