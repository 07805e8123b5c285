"""The registry: names -> parsers, entry-point plugins, options, chains."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import metadata
from typing import Any

import pytest

from sluice.errors import ConfigError, RecordError
from sluice.parser import registry
from sluice.parser.builtin import MeasurementParser

RECORD = {"id": "r-1", "sensor": "boiler-7", "metric": "temp", "value": 1, "ts": 1000}


# Plugins for the fake entry points below; the entry points name them by module path.
class EchoParser:
    name = "echo"
    kinds = frozenset({"log"})

    def __init__(self, options: Mapping[str, str]) -> None:
        self.options = dict(options)

    def parse(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return {**record, "echoed": True}

    def example(self) -> dict[str, Any]:
        return {"line": "hello"}


class Crashes(EchoParser):
    name = "crashes"

    def parse(self, record: Mapping[str, Any]) -> dict[str, Any]:
        raise KeyError("boom")


def refuses_to_start(options: Mapping[str, str]) -> EchoParser:
    raise RuntimeError("no licence")


def not_a_parser(options: Mapping[str, str]) -> object:
    return object()


HERE = __name__


def point(name: str, target: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name, target, registry.ENTRY_POINT_GROUP)


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[metadata.EntryPoint]]]:
    """Fake installed plugins: fill the returned dict with name -> entry points."""
    installed: dict[str, list[metadata.EntryPoint]] = {}
    monkeypatch.setattr(registry, "_entry_points", lambda: installed)
    registry._factory.cache_clear()
    yield installed
    registry._factory.cache_clear()


def test_builtins_are_known() -> None:
    assert {"measurement", "uppercase"} <= set(registry.known_names())
    assert registry.BUILTIN["measurement"] is MeasurementParser


def test_single_parser_chain() -> None:
    chain = registry.build_chain(["measurement"])
    assert chain.names == ("measurement",)
    assert chain.accepts("measurement")
    assert not chain.accepts("log")
    doc = chain.parse(RECORD)
    assert doc["parser"] == "measurement"
    assert doc["@timestamp"] == "1970-01-01T00:00:01.000Z"


def test_chain_applies_transforms_in_order() -> None:
    chain = registry.build_chain(
        ["measurement", "uppercase"], {"uppercase.fields": "sensor,metric"}
    )
    assert chain.names == ("measurement", "uppercase")
    assert chain.accepts("measurement")
    doc = chain.parse(RECORD)
    assert (doc["sensor"], doc["metric"], doc["parser"]) == ("BOILER-7", "TEMP", "measurement")
    assert RECORD["sensor"] == "boiler-7"


def test_chain_of_any_kind_parsers_accepts_every_kind() -> None:
    chain = registry.build_chain(["uppercase"])
    assert chain.accepts("measurement")
    assert chain.accepts("anything")


def test_chain_names_may_be_a_comma_separated_string() -> None:
    assert registry.build_chain("measurement, uppercase").names == ("measurement", "uppercase")


def test_chain_passes_record_errors_through() -> None:
    with pytest.raises(RecordError) as caught:
        registry.build_chain(["measurement", "uppercase"]).parse({"id": "x"})
    assert caught.value.reason == "missing_field"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.build_chain(["measurement", "nope"])
    message = str(caught.value)
    assert "'nope'" in message
    assert "measurement" in message
    assert "uppercase" in message


def test_empty_chain_is_refused() -> None:
    with pytest.raises(ConfigError, match="known parsers"):
        registry.build_chain([])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"uppercase.colour": "red"}, "does not understand"),
        ({"celsius.digits": "1"}, "not in the chain"),
        ({"fields": "sensor"}, r"PARSER\.OPTION"),
    ],
)
def test_bad_options_stop_the_build(options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        registry.build_chain(["measurement", "uppercase"], options)


def test_parse_options() -> None:
    assert registry.parse_options(None) == {}
    assert registry.parse_options("") == {}
    assert registry.parse_options(" uppercase.fields=sensor,metric ;\n geo.precision = 5;") == {
        "uppercase.fields": "sensor,metric",
        "geo.precision": "5",
    }
    # Repeated flags, later ones winning: how the worker merges env and flags.
    assert registry.parse_options(["a.x=1;a.y=2", "a.x=3"]) == {"a.x": "3", "a.y": "2"}
    assert registry.parse_options(["a.x="]) == {"a.x": ""}


@pytest.mark.parametrize("raw", ["fields=sensor", "uppercase.fields", ".x=1", "up.=1"])
def test_parse_options_refuses_malformed_pairs(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"PARSER\.OPTION=VALUE"):
        registry.parse_options(raw)


# -- entry-point plugins -------------------------------------------------------------------


def test_plugin_is_loaded_from_its_entry_point(plugins: dict[str, Any]) -> None:
    plugins["echo"] = [point("echo", f"{HERE}:EchoParser")]
    assert "echo" in registry.known_names()
    chain = registry.build_chain(["echo"], {"echo.level": "3"})
    assert chain.parsers[0].options == {"level": "3"}  # type: ignore[attr-defined]
    assert chain.accepts("log")
    assert chain.parse({"line": "x"}) == {"line": "x", "echoed": True}


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("tests.parser.no_such_module:Parser", "'broken' .* failed to load: ModuleNotFoundError"),
        (f"{HERE}:NoSuchClass", "'broken' .* failed to load: AttributeError"),
        (f"{HERE}:refuses_to_start", "'broken' could not start: RuntimeError: no licence"),
        (f"{HERE}:not_a_parser", "'broken' lacks name, kinds, parse or example"),
        (f"{HERE}:EchoParser", "registered as 'broken' calls itself 'echo'"),
    ],
)
def test_broken_plugin_is_named(plugins: dict[str, Any], target: str, match: str) -> None:
    plugins["broken"] = [point("broken", target)]
    with pytest.raises(ConfigError, match=match):
        registry.build_chain(["measurement", "broken"])
    # Only the chain that names it fails.
    assert registry.build_chain(["measurement"]).names == ("measurement",)


def test_name_clashes_fail_only_when_used(plugins: dict[str, Any]) -> None:
    plugins["echo"] = [point("echo", "a:Echo"), point("echo", "b:Echo")]
    plugins["uppercase"] = [point("uppercase", "c:Upper")]
    with pytest.raises(ConfigError, match="several plugins claim parser name 'echo': a:Echo, b:Echo"):
        registry.build_chain(["echo"])
    with pytest.raises(ConfigError, match="c:Upper reuses the built-in parser name 'uppercase'"):
        registry.build_chain(["uppercase"])
    assert registry.build_chain(["measurement"]).names == ("measurement",)


def test_unexpected_exception_becomes_a_record_error(plugins: dict[str, Any]) -> None:
    plugins["crashes"] = [point("crashes", f"{HERE}:Crashes")]
    chain = registry.build_chain(["uppercase", "crashes"])
    with pytest.raises(RecordError) as caught:
        chain.parse({"sensor": "a"})
    assert caught.value.reason == "parser_failed"
    assert "crashes: KeyError" in str(caught.value)
    assert isinstance(caught.value.__cause__, KeyError)


def test_entry_points_are_listed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = metadata.entry_points

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metadata, "entry_points", counting)
    registry._entry_points.cache_clear()
    registry._factory.cache_clear()
    try:
        registry.known_names()
        registry.known_names()
        registry.build_chain(["measurement", "uppercase"])
        assert len(calls) == 1
    finally:
        registry._entry_points.cache_clear()
        registry._factory.cache_clear()
