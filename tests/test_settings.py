from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from sluice.errors import ConfigError
from sluice.settings import BrokerSettings, add_arguments, describe, load, option


@dataclass(frozen=True)
class DemoSettings(BrokerSettings):
    port: int = option(7000, "port")
    ratio: float = option(0.5, "a ratio")
    kinds: tuple[str, ...] = option(("measurement",), "kinds")
    verbose: bool = option(False, "chatty")
    token: str = option("", "an api token", secret=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, DemoSettings)
    return parser.parse_args(argv)


def test_defaults_then_environment_then_flags() -> None:
    """A flag beats the environment, which beats the default."""
    env = {"SLUICE_PORT": "7100", "SLUICE_RATIO": "0.25", "SLUICE_KINDS": "a, b"}
    s = load(DemoSettings, parse(["--port", "7200"]), env)
    assert s.port == 7200
    assert s.ratio == 0.25
    assert s.kinds == ("a", "b")
    assert s.verbose is False
    assert load(DemoSettings, parse([]), {}).port == 7000


def test_booleans_from_flags_and_environment() -> None:
    assert load(DemoSettings, parse(["--verbose"]), {}).verbose is True
    assert load(DemoSettings, parse([]), {"SLUICE_VERBOSE": "yes"}).verbose is True
    assert load(DemoSettings, parse(["--no-verbose"]), {"SLUICE_VERBOSE": "1"}).verbose is False


def test_unreadable_value_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="SLUICE_PORT"):
        load(DemoSettings, parse([]), {"SLUICE_PORT": "seventy"})


def test_bad_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="log_level"):
        load(DemoSettings, parse(["--log-level", "loud"]), {})


def test_describe_masks_secrets_and_url_passwords() -> None:
    s = load(DemoSettings, parse(["--token", "hunter2"]),
             {"SLUICE_AMQP_URL": "amqp://user:s3cret@rabbit:5672/vh"})
    shown = describe(s)
    assert shown["token"] == "***"
    assert shown["amqp_url"] == "amqp://user:***@rabbit:5672/vh"
    assert "s3cret" not in repr(shown) and "hunter2" not in repr(shown)
    assert shown["kinds"] == ["measurement"]


def test_instance_id_defaults_to_host_and_pid() -> None:
    s = load(DemoSettings, parse([]), {})
    assert s.instance_id.endswith(f"-{__import__('os').getpid()}")
