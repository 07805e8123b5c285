"""``sluice parser``: parses raw records with a chain of pluggable parsers and bulk-indexes
the documents into Elasticsearch.

The parser plugin API is :mod:`.interface` (what a parser is) and :mod:`.registry`
(names -> parsers, chains); see ``docs/parsers.md``.
"""

from __future__ import annotations

from .interface import ANY_KIND, Document, Parser, ParserFactory, Record
from .registry import ParserChain, build_chain, known_names, parse_options

__all__ = [
    "ANY_KIND",
    "Document",
    "Parser",
    "ParserChain",
    "ParserFactory",
    "Record",
    "build_chain",
    "known_names",
    "parse_options",
]
