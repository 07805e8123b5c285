"""Parser names -> parsers, and chains of them.

In-tree parsers are listed in :data:`BUILTIN`, the one place to register them. Other
packages add parsers through the entry-point group ``sluice.parsers``; the entry point's
name is the parser's name and its object is a factory (see
:data:`~sluice.parser.interface.ParserFactory`)::

    [project.entry-points."sluice.parsers"]
    geo = "sluice_geo:GeoParser"

Entry points are listed once per process and each is imported only when its name is
used, so a broken plugin that nobody asked for cannot stop a worker.

Options reach parsers as ``NAME.KEY=VALUE`` pairs (``--parser-option`` /
``SLUICE_PARSER_OPTIONS``, see :func:`parse_options`); :func:`build_chain` hands each
parser its own, without the ``NAME.`` prefix.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Callable, Optional, Union

from ..errors import ConfigError, RecordError
from .builtin import MeasurementParser, UppercaseParser
from .interface import (
    ANY_KIND,
    BatchEncoder,
    ColumnEncoder,
    Columns,
    Document,
    Encoded,
    Parser,
    ParserFactory,
    Record,
)

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "ParserChain",
    "build_chain",
    "create",
    "known_names",
    "parse_options",
]

ENTRY_POINT_GROUP = "sluice.parsers"

#: The in-tree parsers. Adding one is one line here.
BUILTIN: Mapping[str, ParserFactory] = {
    "measurement": MeasurementParser,
    "uppercase": UppercaseParser,
}


class ParserChain:
    """Parsers applied in order: the first makes the document from the record, each
    following one transforms the document the previous one returned.

    ``parse`` raises only :class:`RecordError`: an exception of any other type from a
    parser is a bug in it, but it is still about this one record, so it becomes
    ``RecordError("parser_failed")`` and the record is dead-lettered instead of the
    worker stopping on every redelivery.

    ``encode_batch`` is the parser's own fast path (:class:`BatchEncoder`) when the chain
    is that one parser, else None: a transform after it needs the documents as maps; and
    so is ``encode_columns`` (:class:`ColumnEncoder`).
    """

    __slots__ = ("_first", "_rest", "encode_batch", "encode_columns", "kinds", "names", "parsers")

    def __init__(self, parsers: Sequence[Parser]) -> None:
        if not parsers:
            raise ConfigError("a parser chain needs at least one parser")
        self.parsers: tuple[Parser, ...] = tuple(parsers)
        self.names: tuple[str, ...] = tuple(p.name for p in self.parsers)
        # The kinds every step accepts; None = any kind.
        kinds: frozenset[str] | None = None
        for p in self.parsers:
            if ANY_KIND not in p.kinds:
                kinds = p.kinds if kinds is None else kinds & p.kinds
        self.kinds = kinds
        # Bound methods looked up once: parse is called per record.
        self._first = self.parsers[0].parse
        self._rest = tuple((p.name, p.parse) for p in self.parsers[1:])
        first = self.parsers[0]
        self.encode_batch: Optional[Callable[[bytes], Optional[list[Encoded]]]] = (
            first.encode_batch if len(self.parsers) == 1 and isinstance(first, BatchEncoder)
            else None
        )
        self.encode_columns: Optional[Callable[[bytes], Optional[Columns]]] = (
            first.encode_columns
            if self.encode_batch is not None and isinstance(first, ColumnEncoder) else None
        )

    def accepts(self, kind: str) -> bool:
        """Whether every parser in the chain takes records of ``kind``."""
        return self.kinds is None or kind in self.kinds

    def parse(self, record: Record) -> Document:
        """The document for ``record``; raises RecordError(reason) if a step refuses it."""
        step = self.names[0]
        try:
            doc = self._first(record)
            for step, parse in self._rest:  # noqa: B007 (step is read by the except clause)
                doc = parse(doc)
        except RecordError:
            raise
        except Exception as exc:
            raise RecordError("parser_failed", f"{step}: {type(exc).__name__}: {exc}") from exc
        return doc

    def __repr__(self) -> str:
        return f"ParserChain({','.join(self.names)})"


@functools.cache
def _entry_points() -> dict[str, list[metadata.EntryPoint]]:
    """The group's entry points by name, listed once per process (listing scans sys.path).

    A list per name so that a clash is reported when, and only when, that name is used.
    """
    if sys.version_info >= (3, 10):
        found: Iterable[metadata.EntryPoint] = metadata.entry_points(group=ENTRY_POINT_GROUP)
    else:
        found = metadata.entry_points().get(ENTRY_POINT_GROUP, ())
    points: dict[str, list[metadata.EntryPoint]] = {}
    for point in found:
        same_name = points.setdefault(point.name, [])
        # One distribution seen through two sys.path entries is not a clash.
        if all(p.value != point.value for p in same_name):
            same_name.append(point)
    return points


def known_names() -> list[str]:
    """Every parser name that can be used: in-tree ones and installed plugins."""
    return sorted({*BUILTIN, *_entry_points()})


@functools.cache
def _factory(name: str) -> ParserFactory:
    """The factory for ``name``; each plugin is imported at most once (cached)."""
    points = _entry_points().get(name, [])
    if name in BUILTIN:
        if points:
            raise ConfigError(f"plugin {points[0].value} reuses the built-in parser name {name!r}")
        return BUILTIN[name]
    if not points:
        raise ConfigError(f"unknown parser {name!r}; known parsers: {', '.join(known_names())}")
    if len(points) > 1:
        raise ConfigError(
            f"several plugins claim parser name {name!r}: {', '.join(p.value for p in points)}"
        )
    point = points[0]
    try:
        factory: ParserFactory = point.load()
    except Exception as exc:
        raise ConfigError(
            f"parser plugin {name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise ConfigError(f"parser plugin {name!r} ({point.value}) is not callable")
    return factory


def create(name: str, options: Mapping[str, str] | None = None) -> Parser:
    """A new parser ``name`` built with ``options`` (its own, without the ``name.`` prefix)."""
    factory = _factory(name)
    try:
        parser = factory(dict(options or {}))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"parser {name!r} could not start: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parser, Parser):
        raise ConfigError(f"parser {name!r} lacks name, kinds, parse or example")
    if parser.name != name:
        # The name is written into documents and metrics; it must be the configured one.
        raise ConfigError(f"parser registered as {name!r} calls itself {parser.name!r}")
    kinds = parser.kinds
    if not isinstance(kinds, frozenset) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise ConfigError(f"parser {name!r}: kinds must be a non-empty frozenset of str")
    return parser


def build_chain(names: Sequence[str], options: Mapping[str, str] | None = None) -> ParserChain:
    """The chain of parsers ``names`` (e.g. ``["measurement", "uppercase"]``).

    ``options`` maps ``"NAME.KEY"`` to a value (see :func:`parse_options`); each parser gets
    the ones starting with its name. Raises ConfigError for an unknown or broken parser,
    an option a parser does not take, or an option for a parser not in the chain.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"no parser named; known parsers: {', '.join(known_names())}")
    per_parser: dict[str, dict[str, str]] = {name: {} for name in names}
    for key, value in (options or {}).items():
        name, _, option = key.partition(".")
        if not option:
            raise ConfigError(f"parser option {key!r} must look like PARSER.OPTION")
        if name not in per_parser:
            raise ConfigError(
                f"parser option {key!r} is for {name!r}, which is not in the chain "
                f"{','.join(names)}"
            )
        per_parser[name][option] = value
    return ParserChain([create(name, per_parser[name]) for name in names])


def parse_options(raw: Union[str, Iterable[str], None]) -> dict[str, str]:
    """``"uppercase.fields=sensor,metric;geo.precision=5"`` -> ``{"uppercase.fields": ...}``.

    Takes the value of ``SLUICE_PARSER_OPTIONS`` (pairs separated by ``;`` or newlines;
    commas belong to values) or the list of repeated ``--parser-option`` flags (each may
    also hold several pairs). A later pair for the same key wins, so flags given after
    the environment override it.
    """
    if raw is None:
        return {}
    items = [raw] if isinstance(raw, str) else list(raw)
    out: dict[str, str] = {}
    for item in items:
        for pair in item.replace("\n", ";").split(";"):
            pair = pair.strip()
            if not pair:
                continue
            key, eq, value = pair.partition("=")
            key = key.strip()
            name, dot, option = key.partition(".")
            if not eq or not dot or not name or not option:
                raise ConfigError(f"parser option {pair!r} must look like PARSER.OPTION=VALUE")
            out[key] = value.strip()
    return out
