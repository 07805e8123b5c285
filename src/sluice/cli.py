"""The ``sluice`` command. Each subcommand is one service, implemented by the module named
in :data:`COMMANDS`, which provides ``HELP``, ``add_arguments(parser)`` and ``main(args)``.

Only the module of the command being run is imported: the services' dependencies
(Elasticsearch's client, aiohttp, the server) cost most of a second to import, which every
``sluice client`` and ``sluice token`` would otherwise pay. ``sluice --help`` imports them
all, for their one-line descriptions.
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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, only that subcommand's flags are added
    (the others stay valid names, so a mistyped one is still named in the error)."""
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
        if only is not None and name != only:
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name, help=module.HELP, description=module.HELP,
        )
        module.add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command to import alone; None for the whole line (``sluice --help client``
    asks for the top level's help, which lists every command)."""
    # The top level takes no option with a value, so the first word is the command.
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_in(words)).parse_args(words)
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
