"""``sluice client``: the command-line entry point (settings are in :mod:`.settings`)."""

from __future__ import annotations

import argparse
import sys

from ..lifecycle import run_until_signal
from ..logs import configure_logging, get_logger
from ..settings import add_arguments as add_settings_arguments
from ..settings import describe, load
from .report import exit_status, render_text
from .runner import ClientService
from .settings import ClientSettings

__all__ = ["HELP", "add_arguments", "main"]

HELP = (
    "Stream records to a sluice server over persistent TCP connections and report what was "
    "acked. Without --file it generates synthetic sensor measurements (a load generator); "
    "with --file PATH (or - for stdin) it sends NDJSON records, one per line, skipping and "
    "reporting invalid lines. Every batch is kept until acked and resent after a nack or a "
    "broken connection. Exit status: 0 all acked, 1 some record not acked, 3 all valid "
    "records acked but some input lines were invalid, 4 the input could not be read to its "
    "end (source_error in the summary), 5 the server refused this client for good: TLS "
    "verification or authentication failed (fatal_error in the summary; not retried)."
)

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ClientSettings)


def main(args: argparse.Namespace) -> int:
    settings = load(ClientSettings, args)
    configure_logging("client", settings.instance_id, settings.log_level)
    log.info("client_starting", settings=describe(settings))
    services: list[ClientService] = []

    def build() -> ClientService:
        services.append(ClientService(settings))
        return services[0]

    # Its own exit status, from the summary, says more than the service's 0 or 1.
    run_until_signal(build)
    summary = services[0].summary()
    print(summary.to_json() if settings.json else render_text(summary), file=sys.stdout, flush=True)
    return exit_status(summary)
