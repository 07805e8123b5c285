"""``sluice api``: the command-line entry point (settings are in :mod:`.settings`)."""

from __future__ import annotations

import argparse

from ..lifecycle import run_until_signal
from ..logs import configure_logging, get_logger
from ..settings import add_arguments as add_settings
from ..settings import describe, load
from .service import ApiService
from .settings import ApiSettings

__all__ = ["HELP", "add_arguments", "main"]

HELP = (
    "serve the query API (/api/v1/...), its OpenAPI document, the dashboard (/) and "
    "/healthz, /readyz, /metrics over Elasticsearch"
)

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, ApiSettings)


def main(args: argparse.Namespace) -> int:
    settings = load(ApiSettings, args)
    configure_logging("api", settings.instance_id, settings.log_level)
    log.info("starting", settings=describe(settings))
    return run_until_signal(lambda: ApiService(settings))
