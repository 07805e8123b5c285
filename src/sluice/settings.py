"""Typed settings: one dataclass per service, filled from defaults, then ``SLUICE_*``
environment variables, then command-line flags (the later wins).

A field is declared with :func:`option`, which records its help text and whether it is a
secret. The same declaration drives ``--help``, the environment variable name
(``SLUICE_<FIELD_NAME_UPPER>``), parsing, and the masked summary each service logs at start::

    @dataclass(frozen=True)
    class ServerSettings(CommonSettings):
        port: int = option(7000, "TCP port for client connections")

Every field can also be read from a file named by ``SLUICE_<NAME>_FILE`` (the convention
of the official Docker images, for Docker and Kubernetes secrets): the file's content,
without its trailing newline, is the value. Setting both ``SLUICE_<NAME>`` and
``SLUICE_<NAME>_FILE`` is a :class:`ConfigError`, since one would be silently ignored.

Validation lives in each class's ``__post_init__`` and raises :class:`ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType, TypeVar

from .durations import parse_duration
from .errors import ConfigError
from .protocol import validate_kind
from .topology import DEFAULT_QUEUE_MAX_BYTES

__all__ = [
    "ENV_PREFIX",
    "BrokerSettings",
    "CommonSettings",
    "OpsSettings",
    "Seconds",
    "StoreSettings",
    "add_arguments",
    "base_type",
    "check_kinds",
    "describe",
    "env_name",
    "field_hints",
    "load",
    "mask_url",
    "mask_urls",
    "option",
    "split_urls",
]

ENV_PREFIX = "SLUICE_"

S = TypeVar("S", bound="CommonSettings")

#: a field of this type takes a duration: ``90s``, ``5m``, ``1h30m`` or plain seconds
Seconds = NewType("Seconds", float)


def option(default: Any, help: str, *, secret: bool = False, metavar: str | None = None) -> Any:
    """Declare a settings field with its help text (shown in ``--help``)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "secret": secret, "metavar": metavar}
    )


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service has."""

    log_level: str = option("info", "log level: debug, info, warning or error")
    instance_id: str = option("", "name of this instance in logs and metrics (default host-pid)")

    def __post_init__(self) -> None:
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(f"log_level must be debug, info, warning or error, not {self.log_level!r}")
        if not self.instance_id:
            object.__setattr__(self, "instance_id", _default_instance_id())


@dataclass(frozen=True)
class OpsSettings(CommonSettings):
    """Settings of services that serve their ops endpoints on a port of their own (the
    server and the parser; the API serves them on its own port)."""

    http_port: int = option(8080, "HTTP port for /healthz, /readyz and /metrics (0 = any free port, -1 = off)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -1 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be -1 (off), 0 (any free port) or a port, not {self.http_port}")


@dataclass(frozen=True)
class BrokerSettings(CommonSettings):
    """Settings of services that talk to RabbitMQ."""

    amqp_url: str = option(
        "amqp://guest:guest@localhost:5672/",
        "RabbitMQ URL, or a comma-separated list of the URLs of a cluster's nodes to fail over "
        "between (passwords are masked in logs)",
    )
    namespace: str = option(
        "sluice", "prefix of every exchange and queue name (exchange <namespace>.ingest)"
    )
    delivery_limit: int = option(
        20, "deliveries of one raw message before RabbitMQ dead-letters it; servers and "
        "parsers must agree, since it is part of the queue declaration"
    )
    queue_max_bytes: int = option(
        DEFAULT_QUEUE_MAX_BYTES, "bytes each raw and dead-letter queue may hold; past it RabbitMQ refuses "
        "publishes (clients get a refused nack, back off and resend) instead of filling its "
        "disk; part of the queue declaration, so servers and parsers must agree"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delivery_limit < 1:
            raise ConfigError("delivery_limit must be at least 1")
        if self.queue_max_bytes < 1:
            raise ConfigError("queue_max_bytes must be at least 1")


@dataclass(frozen=True)
class StoreSettings(CommonSettings):
    """Settings of services that talk to Elasticsearch."""

    es_url: str = option("http://localhost:9200", "Elasticsearch URL (https:// for TLS)")
    index_prefix: str = option("sluice", "prefix of the index template and daily indices")
    es_ca_file: str = option("", "CA (PEM) to verify Elasticsearch's certificate with "
                                 "(default: the system's CAs)", metavar="PATH")
    es_username: str = option("", "Elasticsearch user (basic authentication; with --es-password)")
    es_password: str = option("", "password of --es-username", secret=True)
    es_api_key: str = option("", "Elasticsearch API key (base64 'id:key' as Elasticsearch "
                                 "returns it), instead of a user and password", secret=True)
    retention_days: int = option(
        30, "days a daily index is kept (0 = for ever): the ILM policy where Elasticsearch "
        "has ILM, `sluice retention` everywhere"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retention_days < 0:
            raise ConfigError("retention_days cannot be negative (0 keeps indices for ever)")
        if bool(self.es_username) != bool(self.es_password):
            raise ConfigError("--es-username and --es-password go together")
        if self.es_api_key and self.es_username:
            raise ConfigError("give either --es-api-key or --es-username/--es-password, not both")
        if self.es_ca_file and not os.path.isfile(self.es_ca_file):
            raise ConfigError(f"--es-ca-file {self.es_ca_file!r} is not a readable file")

    def es_client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncElasticsearch``: CA and credentials, as set."""
        options: dict[str, Any] = {}
        if self.es_ca_file:
            options["ca_certs"] = self.es_ca_file
        if self.es_username:
            options["basic_auth"] = (self.es_username, self.es_password)
        if self.es_api_key:
            options["api_key"] = self.es_api_key
        return options


def check_kinds(kinds: tuple[str, ...]) -> None:
    """The one check of every ``kinds`` setting: at least one kind, each a kind the wire
    protocol accepts, so no service starts on a kind another one refuses."""
    if not kinds:
        raise ConfigError("kinds must name at least one record kind")
    for kind in kinds:
        try:
            validate_kind(kind)
        except ValueError as exc:
            raise ConfigError(f"kinds: {exc}") from exc


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a settings class."""
    return typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))


def base_type(hint: Any) -> Any:
    """``Optional[X]`` -> X; other hints unchanged."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0]
    return hint


def _parse(raw: str, hint: Any, name: str) -> Any:
    target = base_type(hint)
    try:
        if target is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if target is int:
            return int(raw)
        if target is float:
            return float(raw)
        if target is Seconds:
            return parse_duration(raw)
        if typing.get_origin(target) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}: cannot read {raw!r} as {getattr(target, '__name__', target)}") from exc
    return raw


def add_arguments(parser: argparse.ArgumentParser, cls: type[CommonSettings]) -> None:
    """Add one flag per settings field; flags default to None so unset ones fall through."""
    hints = field_hints(cls)
    for f in dataclasses.fields(cls):
        hint = base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{f.metadata.get('help', '')} [env {env_name(f.name)}; default {shown!r}]"
        help_text = help_text.replace("%", "%%")
        if hint is bool:
            parser.add_argument(
                _flag(f.name), dest=f.name, default=None,
                action=argparse.BooleanOptionalAction, help=help_text,
            )
        else:
            parser.add_argument(
                _flag(f.name), dest=f.name, default=None, metavar=f.metadata.get("metavar"),
                help=help_text,
            )


def _from_environment(name: str, environ: Mapping[str, str]) -> str | None:
    """``NAME`` or the content of the file named by ``NAME_FILE``; None when neither is set."""
    file_var = name + "_FILE"
    if file_var not in environ:
        return environ.get(name)
    if name in environ:
        raise ConfigError(f"both {name} and {file_var} are set; set only one")
    path = environ[file_var]
    try:
        with open(path, encoding="utf-8") as fh:
            content = fh.read()
    except OSError as exc:
        raise ConfigError(f"{file_var}: cannot read {path!r}: {exc.strerror or exc}") from exc
    return content[:-1] if content.endswith("\n") else content


def load(
    cls: type[S], args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> S:
    """Build settings: defaults, then environment (or ``_FILE``), then flags that were given."""
    environ = os.environ if environ is None else environ
    hints = field_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            values[f.name] = given if isinstance(given, bool) else _parse(str(given), hints[f.name], _flag(f.name))
            continue
        raw = _from_environment(env_name(f.name), environ)
        if raw is not None:
            values[f.name] = _parse(raw, hints[f.name], env_name(f.name))
    return cls(**values)


# A password may hold "/", "#", "?" or "@" unescaped, and urlsplit then misses it (it ends
# the authority at the first "/"), so the userinfo is taken to run to the *last* "@".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def mask_url(value: str) -> str:
    """The URL with any password replaced by ``***``; over-masks rather than leaks."""
    scheme = _SCHEME.match(value)
    head, at, tail = value.rpartition("@")
    if scheme is None or not at:
        return value
    userinfo = head[scheme.end():]
    if ":" not in userinfo:
        return value
    return f"{scheme.group(0)}{userinfo.split(':', 1)[0]}:***@{tail}"


# A list is split only before something that starts a URL (",amqp://"), so a comma inside a
# password does not cut it in two.
_LIST_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated list (``amqp://a,amqp://b``), blanks dropped."""
    return tuple(part for part in (p.strip(" \t\n,") for p in _LIST_SEPARATOR.split(value)) if part)


def mask_urls(value: str) -> str:
    """:func:`mask_url` applied to each URL of a comma-separated list on its own, so that
    masking one password does not swallow the hosts of the URLs between."""
    parts = split_urls(value)
    return ",".join(mask_url(part) for part in parts) if len(parts) > 1 else mask_url(value)


def describe(settings: CommonSettings) -> dict[str, Any]:
    """Settings as a plain dict for the start-up log line, with secrets masked."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, str) and "://" in value:
            value = mask_urls(value)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
