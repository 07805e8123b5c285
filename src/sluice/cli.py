"""The ``sluice`` command. Each subcommand is one service, implemented by the module named
in :data:`COMMANDS`, which provides ``HELP``, ``add_arguments(parser)`` and ``main(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ConfigError

__all__ = ["COMMANDS", "build_parser", "main"]

#: subcommand -> module implementing it. Read here, never discovered.
COMMANDS: dict[str, str] = {
    "server": "sluice.server.main",
    "client": "sluice.client.main",
    "parser": "sluice.parser.main",
    "api": "sluice.api.main",
    "deadletters": "sluice.deadletters.main",
    "retention": "sluice.retention",
    "token": "sluice.token_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description="sluice: a streaming-ingest pipeline. Clients stream msgpack frames over TCP "
        "to servers, which publish to RabbitMQ; parsers index into Elasticsearch; the API "
        "serves aggregations. Every flag can also be set as an environment variable "
        "SLUICE_<FLAG> (for example --amqp-url as SLUICE_AMQP_URL); flags win.",
    )
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name, help=module.HELP, description=module.HELP,
        )
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args._module.main(args)
    except ConfigError as exc:
        print(f"sluice {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
