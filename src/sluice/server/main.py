"""``sluice server``: the command-line entry point (settings are in :mod:`.settings`)."""

from __future__ import annotations

import argparse

from .. import settings as settings_mod
from ..lifecycle import run_until_signal
from ..logs import configure_logging, get_logger
from .app import IngestServer
from .settings import ServerSettings

__all__ = ["HELP", "add_arguments", "main"]

HELP = (
    "Accept client connections (wire protocol v1, docs/protocol.md) and publish every batch "
    "to RabbitMQ with publisher confirms, acking each batch once RabbitMQ has it."
)

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    settings_mod.add_arguments(parser, ServerSettings)


def main(args: argparse.Namespace) -> int:
    settings = settings_mod.load(ServerSettings, args)
    configure_logging("server", settings.instance_id, settings.log_level)
    log.info("server_settings", **settings_mod.describe(settings))
    return run_until_signal(lambda: IngestServer(settings))
