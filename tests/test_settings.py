from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from sluice.cli import build_parser
from sluice.errors import ConfigError
from sluice.settings import (
    BrokerSettings,
    StoreSettings,
    add_arguments,
    describe,
    load,
    mask_url,
    option,
    split_urls,
)


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:ab/cd@host/", "amqp://u:***@host/"),
        ("amqp://u:a#b?c@host:5671/vh", "amqp://u:***@host:5671/vh"),
        ("amqp://u:p@ss@host/", "amqp://u:***@host/"),
        ("https://elastic:x%2Fy@es:9200", "https://elastic:***@es:9200"),
        ("amqp://guest@host/", "amqp://guest@host/"),
    ],
)
def test_mask_url_hides_every_password_shape(url: str, shown: str) -> None:
    """Passwords with unescaped '/', '#', '?' or '@' are masked too, not logged."""
    assert mask_url(url) == shown


def test_a_setting_can_come_from_a_file(tmp_path: Path) -> None:
    """SLUICE_<NAME>_FILE holds the value (Docker/Kubernetes secrets); one newline is dropped."""
    secret = tmp_path / "token"
    secret.write_text("hunter2\n")
    s = load(DemoSettings, parse([]), {"SLUICE_TOKEN_FILE": str(secret)})
    assert s.token == "hunter2"
    assert describe(s)["token"] == "***"


def test_a_value_and_its_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("a")
    with pytest.raises(ConfigError, match="both SLUICE_TOKEN and SLUICE_TOKEN_FILE"):
        load(DemoSettings, parse([]), {"SLUICE_TOKEN": "b", "SLUICE_TOKEN_FILE": str(secret)})


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SLUICE_TOKEN_FILE: cannot read"):
        load(DemoSettings, parse([]), {"SLUICE_TOKEN_FILE": str(tmp_path / "missing")})


def test_elasticsearch_security_settings(tmp_path: Path) -> None:
    """CA, basic credentials or an API key become the Elasticsearch client's options; a user
    without a password, both kinds of credentials, or a missing CA file are refused."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    options = StoreSettings(es_ca_file=str(ca), es_username="sluice", es_password="pw").es_client_options()
    assert options == {"ca_certs": str(ca), "basic_auth": ("sluice", "pw")}
    assert StoreSettings(es_api_key="a2V5").es_client_options() == {"api_key": "a2V5"}
    assert StoreSettings().es_client_options() == {}
    for bad in ({"es_username": "u"}, {"es_api_key": "k", "es_username": "u", "es_password": "p"},
                {"es_ca_file": str(tmp_path / "absent.pem")}):
        with pytest.raises(ConfigError):
            StoreSettings(**bad)
    assert describe(StoreSettings(es_username="u", es_password="secret"))["es_password"] == "***"


def test_a_broker_url_list_is_masked_url_by_url() -> None:
    """Each URL of a cluster's list is masked on its own: every host stays visible, no
    password does, and a comma inside a password does not split the list."""
    value = "amqp://u:p1@rabbitmq1:5672/, amqp://u:p,2@rabbitmq2:5672/,amqp://u:p@3@rabbitmq3/"
    assert split_urls(value) == (
        "amqp://u:p1@rabbitmq1:5672/", "amqp://u:p,2@rabbitmq2:5672/", "amqp://u:p@3@rabbitmq3/",
    )
    s = load(DemoSettings, parse([]), {"SLUICE_AMQP_URL": value})
    assert describe(s)["amqp_url"] == (
        "amqp://u:***@rabbitmq1:5672/,amqp://u:***@rabbitmq2:5672/,amqp://u:***@rabbitmq3/"
    )


def test_a_list_of_blanks_holds_no_url() -> None:
    assert split_urls(" , ") == ()


@pytest.mark.parametrize("kinds", ["a.b", "Upper", "_lead", "dead", ""])
@pytest.mark.parametrize("settings_class", [
    "sluice.server.settings:ServerSettings", "sluice.parser.settings:ParserSettings",
    "sluice.api.settings:ApiSettings", "sluice.deadletters.settings:DeadLetterSettings",
])
def test_every_service_refuses_the_kinds_the_protocol_refuses(
    settings_class: str, kinds: str,
) -> None:
    """One rule for kinds: no service starts on a kind that another one would refuse."""
    module_name, _, name = settings_class.partition(":")
    cls = getattr(importlib.import_module(module_name), name)
    with pytest.raises(ConfigError, match="kinds"):
        load(cls, argparse.Namespace(), environ={"SLUICE_KINDS": kinds})


@pytest.mark.parametrize("settings_class", [
    "sluice.server.settings:ServerSettings", "sluice.parser.settings:ParserSettings",
])
@pytest.mark.parametrize("port", ["-2", "65536"])
def test_the_ops_port_is_off_any_or_a_port(settings_class: str, port: str) -> None:
    module_name, _, name = settings_class.partition(":")
    cls = getattr(importlib.import_module(module_name), name)
    assert load(cls, argparse.Namespace(), environ={"SLUICE_HTTP_PORT": "-1"}).http_port == -1
    with pytest.raises(ConfigError, match="http_port"):
        load(cls, argparse.Namespace(), environ={"SLUICE_HTTP_PORT": port})


@pytest.mark.parametrize("command", ["api", "deadletters"])
def test_services_without_a_side_port_take_no_ops_port_flag(command: str) -> None:
    # The API serves /healthz, /readyz and /metrics on its own --port; deadletters serves none.
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--http-port", "9000"] + (["list"] if command == "deadletters" else []))
