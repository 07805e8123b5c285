"""What an Elasticsearch error means for the records behind it: the one place that decides.

Every caller that reads an answer from Elasticsearch (the parser's bulk indexer, the
dead-letter event writer, the template installer, the API) asks this module instead of
keeping a list of statuses of its own. An error is judged by its ``type`` first and its
HTTP status second, because the status alone lies both ways: a 403 may be a cluster
block (the disk filled up; retrying later works) and a 400 may be the shard limit (an
operator raises it; retrying later works), while a 400 ``mapper_parsing_exception`` will
fail the same way for ever.

=================================================  ==========  ======================
error                                              verdict     what happens (bulk)
=================================================  ==========  ======================
no answer: refused connection, timeout             transient   retry with backoff
status 408, 429, 5xx                               transient   retry with backoff
``cluster_block_exception`` (403, read-only)       transient   retry with backoff
``index_not_found_exception`` on a write           transient   retry with backoff
(``action.auto_create_index`` is off)
shard limit (``validation_exception`` / any type   transient   retry with backoff
whose reason says "maximum ... shards open")
``es_rejected_execution_exception``,               transient   retry with backoff
``circuit_breaking_exception``, unavailable
shards, ``security_exception``
401, 403, 404, 405, 407 without a content type     transient   retry with backoff
(wrong URL, credentials or privileges)
``mapper_parsing_exception``,                      content     dead letter
``document_parsing_exception``,                    (``es_<type>``)
``illegal_argument_exception``, parse errors
any other 4xx                                      content     dead letter
=================================================  ==========  ======================

A transient item is retried up to ``--item-retry-limit`` times and then dead-lettered
with reason :data:`RETRY_EXHAUSTED`; a whole request refused for its content is split
until the refused documents are alone (see :mod:`sluice.parser.indexer`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, TransportError

from .errors import IndexingError, StoreUnavailable

__all__ = [
    "CONTENT_TYPES",
    "DUPLICATE_STATUS",
    "OK_STATUSES",
    "RETRY_EXHAUSTED",
    "TRANSIENT_TYPES",
    "Fault",
    "classify",
    "item_fault",
    "request_fault",
    "store_error",
]

#: statuses of an item that was stored
OK_STATUSES = frozenset({200, 201})
#: a ``create`` whose ``_id`` exists: the record is already stored, which is success
DUPLICATE_STATUS = 409
#: the dead-letter reason of an item that stayed transient for ``--item-retry-limit`` tries
RETRY_EXHAUSTED = "es_retry_exhausted"

#: error types that say "not now": the same request may succeed later, unchanged
TRANSIENT_TYPES = frozenset({
    "cluster_block_exception",          # read-only after the flood-stage disk watermark
    "index_create_block_exception",
    "index_closed_exception",           # an operator closed the index
    "es_rejected_execution_exception",  # write thread pool queue full (429)
    "circuit_breaking_exception",       # heap pressure (429)
    "unavailable_shards_exception",
    "no_shard_available_action_exception",
    "primary_missing_action_exception",
    "process_cluster_event_timeout_exception",
    "node_not_connected_exception",
    "node_closed_exception",
    "timeout_exception",
    "receive_timeout_transport_exception",
    "security_exception",               # credentials or privileges: fixed by an operator
})

#: error types that say "never like this": the document itself is the problem
CONTENT_TYPES = frozenset({
    "mapper_parsing_exception",         # Elasticsearch before 8.6, OpenSearch
    "document_parsing_exception",       # Elasticsearch 8.6+
    "strict_dynamic_mapping_exception",
    "illegal_argument_exception",
    "mapper_exception",
    "parse_exception",
    "json_parse_exception",
    "x_content_parse_exception",
})

# A missing index on a write means auto-create is off; on a read it means "not there".
_MISSING_INDEX = "index_not_found_exception"
# The shard limit reads differently across versions (validation_exception in 7+,
# illegal_argument_exception before); the wording is what stays.
_SHARD_LIMIT = re.compile(r"maximum (?:\w+ )?shards open|shards, but this cluster", re.I)
# Statuses that describe the path to the store, not the data sent.
_ACCESS_STATUSES = frozenset({401, 403, 404, 405, 407})


@dataclass(frozen=True)
class Fault:
    """An Elasticsearch error, judged."""

    #: True: retry later, unchanged. False: the content is refused; dead-letter it.
    transient: bool
    #: HTTP status (0 when there was no answer)
    status: int
    #: Elasticsearch's error ``type`` ("" when the answer had none)
    type: str
    #: human-readable: status, type, reason and cause, at most 2,000 characters
    detail: str

    @property
    def unreachable(self) -> bool:
        """No answer, or an answer that says "overloaded": nothing was decided yet."""
        return self.status <= 0 or self.status in (408, 429) or self.status >= 500

    @property
    def reason(self) -> str:
        """The dead-letter reason: ``es_<type>``, or ``es_<status>`` without a type."""
        return f"es_{self.type}" if self.type else f"es_{self.status}"


def classify(status: int, error_type: str = "", text: str = "", *, writing: bool = True) -> bool:
    """True when the error is transient (see the module's table). ``writing``: the
    request stores documents (a missing index then means auto-create is off)."""
    if error_type in TRANSIENT_TYPES or _SHARD_LIMIT.search(text):
        return True
    if error_type == _MISSING_INDEX:
        return writing
    if status == 408 or status == 429 or status >= 500 or status <= 0:
        return True
    if error_type in CONTENT_TYPES:
        return False
    return status in _ACCESS_STATUSES and not error_type


def _parts(error: Any) -> tuple[str, str]:
    """``(type, text)`` of an Elasticsearch error body (``{"type", "reason", "caused_by"}``);
    ``text`` joins the reasons of the error, its cause and its root causes."""
    if isinstance(error, Mapping) and isinstance(error.get("error"), (Mapping, str)):
        error = error["error"]  # a whole response body
    if not isinstance(error, Mapping):
        return "", "" if error is None else str(error)
    error_type = str(error.get("type") or "")
    texts = [str(error.get("reason") or error_type)]
    caused = error.get("caused_by")
    if isinstance(caused, Mapping) and caused.get("reason"):
        texts.append(str(caused["reason"]))
    roots = error.get("root_cause")
    if isinstance(roots, list):
        texts.extend(str(r.get("reason")) for r in roots[:3]
                     if isinstance(r, Mapping) and r.get("reason") and r.get("reason") not in texts)
    return error_type, ": ".join(texts)


def item_fault(status: int, error: Any) -> Fault:
    """Judge one bulk item that was neither stored nor a duplicate (``error`` is the
    item's ``error`` value, a mapping or a string)."""
    error_type, text = _parts(error)
    named = f"{error_type}: {text}" if error_type and text != error_type else text
    detail = f"{status} {named or 'refused'}"[:2000]
    return Fault(classify(status, error_type, text), status, error_type, detail)


def request_fault(exc: Exception, context: str, *, writing: bool = True) -> Fault:
    """Judge a failed request (an elasticsearch-py exception)."""
    if isinstance(exc, ApiError):
        status = exc.meta.status if isinstance(exc.meta.status, int) else 0
        error_type, text = _parts(exc.body)
        text = text or str(exc.message)
        named = f"{error_type}: {text}" if error_type and text != error_type else text
        detail = f"{context}: {status} {named}"[:2000]
        return Fault(classify(status, error_type, text, writing=writing), status, error_type, detail)
    if isinstance(exc, TransportError):
        return Fault(True, 0, "", f"{context}: {exc.message}"[:2000])
    return Fault(False, 0, "", f"{context}: {exc!r}"[:2000])


def store_error(
    exc: Exception, context: str = "Elasticsearch request failed", *, writing: bool = False
) -> IndexingError:
    """The package error for an elasticsearch-py error: :class:`StoreUnavailable` when
    retrying later may work, :class:`IndexingError` otherwise. The caller raises the
    result ``from exc``."""
    fault = request_fault(exc, context, writing=writing)
    return StoreUnavailable(fault.detail) if fault.transient else IndexingError(fault.detail)
