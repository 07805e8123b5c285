"""What a parser is: the contract every parser, in-tree or third-party, keeps.

A parser turns one record (a map decoded from msgpack) into one document, or refuses it
by raising :class:`~sluice.errors.RecordError` with a short reason slug; the worker
dead-letters refused records with that reason, so reasons should come from a small fixed
set (they become metric labels). A parser must not mutate its input: the worker keeps the
original record to dead-letter it unchanged.

In a chain, the first parser makes the document from the raw record and the ones after it
transform that document, so a transform's "record" is the previous parser's output.

A parser may also offer :class:`BatchEncoder`'s ``encode_batch``, an optional fast path
that turns a whole message into JSON documents in one pass, and next to it
:class:`ColumnEncoder`'s ``encode_columns``, the same documents as :class:`Columns`;
``parse`` stays the definition of what the parser does, and the compliance suite checks
that they all agree.

This module is typing only; :mod:`sluice.parser.registry` builds parsers and chains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union, runtime_checkable

__all__ = [
    "ANY_KIND", "BatchEncoder", "ColumnEncoder", "Columns", "Document", "Encoded", "Parser",
    "ParserFactory", "Record",
]

#: In ``Parser.kinds``: the parser accepts records of every kind (transforms do).
ANY_KIND = "*"

Record = Mapping[str, Any]
Document = dict[str, Any]
#: One document of :meth:`BatchEncoder.encode_batch`: its ``id``, its ``ts`` (integer epoch
#: milliseconds) and the whole document as one JSON object.
Encoded = tuple[str, int, bytes]


class Columns(NamedTuple):
    """A message's documents, column by column (:meth:`ColumnEncoder.encode_columns`).

    Document k is the concatenation of every part's k-th item, in order; a ``bytes`` part
    is the same in every document, any other part holds one item per record. So a
    document is joined once, where the worker needs it, instead of once by the parser and
    again into its bulk action.
    """

    ids: Sequence[str]
    stamps: Sequence[int]
    parts: tuple[Union[bytes, Sequence[bytes]], ...]


@runtime_checkable
class Parser(Protocol):
    """One parsing or transforming step.

    Plain class attributes satisfy the read-only properties below, so a parser needs no
    base class: ``name = "mine"`` and ``kinds = frozenset({"measurement"})`` are enough.
    """

    @property
    def name(self) -> str:
        """The name it is registered under; the registry checks they agree."""

    @property
    def kinds(self) -> frozenset[str]:
        """Record kinds it accepts; ``{"*"}`` (:data:`ANY_KIND`) for all of them."""

    def parse(self, record: Record) -> Document:
        """A new document made from ``record``; raises ``RecordError(reason)`` to refuse it.

        ``record`` is typed as a map, but it is whatever the wire carried: check that it
        is one. Must not modify ``record`` or anything inside it.
        """

    def example(self) -> Document:
        """A record this parser accepts, for the compliance test and the docs."""


#: Builds a parser from its options (``--parser-option NAME.KEY=VALUE`` with the
#: ``NAME.`` prefix removed). Raises ConfigError for options it does not understand.
#: A class whose constructor takes the options mapping is a factory.
ParserFactory = Callable[[Mapping[str, str]], Parser]


@runtime_checkable
class BatchEncoder(Protocol):
    """Optional, for speed: a parser that can do a whole message at once.

    The worker uses it when the parser is alone in its chain. Decoding a message of
    records into typed structures and encoding their documents in one C pass each
    (msgspec) costs a fraction of a ``parse`` call per record.
    """

    def encode_batch(self, payload: bytes) -> Optional[list[Encoded]]:
        """The documents of every record in ``payload`` (a message body: a msgpack array
        of records), in order; or None, and the worker then decodes the payload and calls
        ``parse`` on each record, which says why a record is refused.

        Return a list only when ``parse`` would accept every record: each item is
        ``(doc["id"], doc["ts"], JSON of doc)`` for ``doc = parse(record)``. Never raise.
        """


@runtime_checkable
class ColumnEncoder(Protocol):
    """Optional, next to :class:`BatchEncoder`: ``encode_batch``'s documents as columns.

    The worker prefers it when the parser is alone in its chain: a document of columns is
    joined straight into its bulk action, which saves a join and a tuple per record.
    """

    def encode_columns(self, payload: bytes) -> Optional[Columns]:
        """What ``encode_batch(payload)`` returns, as :class:`Columns`: None exactly when
        it is None; otherwise ``ids[k]``, ``stamps[k]`` and the parts of document k are
        item k of ``encode_batch``'s list. Never raise.
        """
