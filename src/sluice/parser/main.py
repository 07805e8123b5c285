"""``sluice parser``: consume raw batches, parse every record, bulk-index into Elasticsearch.

Configuration errors (an unknown parser name, a chain that does not take a kind, a bad
option) stop startup before anything connects: ``sluice`` then exits with status 2 and a
message listing the known parsers.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from ..allocator import keep_large_buffers
from ..errors import ConfigError
from ..lifecycle import run_until_signal
from ..logs import configure_logging, get_logger
from ..settings import add_arguments as add_settings_arguments
from ..settings import describe, load
from .delivery import Chain
from .registry import build_chain, parse_options
from .service import ParserService
from .settings import ParserSettings

__all__ = ["HELP", "add_arguments", "build_chains", "main"]

HELP = (
    "Consume raw record batches from RabbitMQ, parse them with a chain of pluggable parsers "
    "and bulk-index the documents into Elasticsearch (exactly-once effect: create by id)."
)

log = get_logger(__name__)


def _chain_names(spec: str, kinds: Sequence[str]) -> dict[str, list[str]]:
    default: list[str] | None = None
    per_kind: dict[str, list[str]] = {}
    for entry in spec.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        kind, eq, names = entry.partition("=")
        parsed = [n.strip() for n in (names if eq else entry).split(",") if n.strip()]
        if eq:
            per_kind[kind.strip()] = parsed
        else:
            default = parsed
    out: dict[str, list[str]] = {}
    for kind in kinds:
        names_for_kind = per_kind.get(kind, default)
        if not names_for_kind:
            raise ConfigError(
                f"parsers: no parser chain for kind {kind!r} in {spec!r}; "
                "give 'a,b' for every kind or 'kind=a,b'"
            )
        out[kind] = names_for_kind
    return out


def build_chains(
    spec: str, kinds: Sequence[str], options: Mapping[str, str]
) -> dict[str, Chain]:
    """One parser chain per kind from ``--parsers``; each gets the options of its parsers."""
    chains: dict[str, Chain] = {}
    for kind, names in _chain_names(spec, kinds).items():
        own = {k: v for k, v in options.items() if k.partition(".")[0] in names}
        chain = build_chain(names, own)
        if not chain.accepts(kind):
            raise ConfigError(f"parser chain {','.join(names)} does not accept kind {kind!r}")
        chains[kind] = chain
    used = {name for chain in chains.values() for name in chain.names}
    stray = sorted(k for k in options if k.partition(".")[0] not in used)
    if stray:
        raise ConfigError(f"parser option(s) {', '.join(stray)} name no parser in use")
    return chains


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, ParserSettings)
    parser.add_argument(
        "--parser-option", dest="parser_option", action="append", default=None,
        metavar="NAME.KEY=VALUE", help="one parser option; repeatable; added to --parser-options",
    )


def main(args: argparse.Namespace) -> int:
    settings = load(ParserSettings, args)
    options = parse_options(settings.parser_options)
    options.update(parse_options(getattr(args, "parser_option", None)))
    chains = build_chains(settings.parsers, settings.kinds, options)
    configure_logging("parser", settings.instance_id, settings.log_level)
    # Bulk bodies of megabytes, made and freed continuously: see sluice.allocator.
    heap = "kept" if keep_large_buffers() else "glibc defaults"
    log.info("parser_starting", settings=describe(settings), large_buffers=heap,
             chains={kind: ",".join(chain.names) for kind, chain in chains.items()})
    return run_until_signal(lambda: ParserService(settings, chains))
