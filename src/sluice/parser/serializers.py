"""How the parser's Elasticsearch client turns bulk bodies into bytes and answers back.

Two costs that elasticsearch-py's own serializers put on every bulk, measured with
py-spy on a parser at full speed (together about a fifth of its CPU time):

- the request: the ndjson body is already bytes, yet the default serializer copies it
  into a bytearray and then into new bytes. :class:`BulkBodySerializer` passes ready
  bytes through untouched (anything else goes the default way);
- the answer: decoding ``{"errors":false,"items":[...]}`` builds two dicts per document
  only for the parser to read ``errors`` and count the items. :class:`AnswerSerializer`
  recognises exactly that answer (as asked for with the indexer's ``filter_path``, or
  with ``took`` ahead of it, from a store that ignores the filter) and returns ``errors``
  and one shared, read-only item per document; every other answer, and any answer with
  errors, is decoded in full with orjson.
"""

from __future__ import annotations

from typing import Any

from elastic_transport import JsonSerializer, NdjsonSerializer

try:
    from elastic_transport import OrjsonSerializer as _Json
except ImportError:  # pragma: no cover - orjson is a dependency
    _Json = JsonSerializer  # type: ignore[misc,assignment]

__all__ = ["AnswerSerializer", "BulkBodySerializer", "serializers"]

# What Elasticsearch answers to a bulk in which every item succeeded, with
# ``filter_path=errors,items.*.status,items.*.error``.
_ALL_OK_HEAD = b'{"errors":false,"items":['
_ALL_OK_TAIL = b"]}"
# ... and what a store that does not apply ``filter_path`` answers: ``took`` comes first.
_TOOK_HEAD = b'{"took":'
_TOOK_TAIL = b',"errors":false,"items":['
_STATUS = b'"status":'
#: stands for each item of an all-good answer; the indexer reads only ``errors`` then
_OK_ITEM: dict[str, Any] = {"create": {"status": 201}}


class AnswerSerializer(_Json):
    """orjson, except for the answer to a bulk in which every item succeeded."""

    def loads(self, data: bytes) -> Any:
        if _all_ok(data):
            # No item can hold an error when ``errors`` is false; each has one status.
            return {"errors": False, "items": [_OK_ITEM] * data.count(_STATUS)}
        return super().loads(data)


def _all_ok(data: bytes) -> bool:
    if not data.endswith(_ALL_OK_TAIL):
        return False
    if data.startswith(_ALL_OK_HEAD):
        return True
    if not data.startswith(_TOOK_HEAD):
        return False
    end = data.find(b",", len(_TOOK_HEAD), len(_TOOK_HEAD) + 21)
    return (end > len(_TOOK_HEAD) and data[len(_TOOK_HEAD):end].isdigit()
            and data.startswith(_TOOK_TAIL, end))


class BulkBodySerializer(NdjsonSerializer):
    """Ndjson whose ready bytes (ending in a newline) are sent as they are, uncopied."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes) and data.endswith(b"\n"):
            return data
        out: bytes = super().dumps(data)
        return out


def serializers() -> dict[str, Any]:
    """The ``serializers=`` argument for the parser's client."""
    return {
        AnswerSerializer.mimetype: AnswerSerializer(),
        BulkBodySerializer.mimetype: BulkBodySerializer(),
    }
