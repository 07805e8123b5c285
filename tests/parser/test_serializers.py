"""The parser client's serializers: bulk bodies sent uncopied, all-good answers not decoded
item by item, everything else exactly as orjson decodes it."""

from __future__ import annotations

import orjson
import pytest
from elastic_transport import SerializationError

from sluice.parser.serializers import AnswerSerializer, BulkBodySerializer


def answer(statuses: list[int], errors: bool) -> bytes:
    items = [{"create": {"status": s}} for s in statuses]
    return orjson.dumps({"errors": errors, "items": items})


@pytest.mark.parametrize("took", [False, True], ids=["filtered", "with_took"])
@pytest.mark.parametrize("count", [0, 1, 5000])
def test_an_all_good_bulk_answer_keeps_errors_and_the_item_count(count: int, took: bool) -> None:
    data = answer([201] * count, errors=False)
    if took:  # a store that ignores filter_path answers ``took`` first
        data = b'{"took":37,' + data[1:]
    got = AnswerSerializer().loads(data)
    assert got["errors"] is False
    assert len(got["items"]) == count
    assert all(item == {"create": {"status": 201}} for item in got["items"])


@pytest.mark.parametrize("data", [
    answer([201, 409, 400], errors=True),
    answer([201], errors=True),
    b'{"took":3,"errors":true,"items":[{"create":{"status":201}}]}',
    b'{"took":"3","errors":false,"items":[{"create":{"status":201}}]}',
    b'{"took":3,"timed_out":false,"errors":false,"items":[]}',
    b'{"acknowledged":true}',
    b'{"errors":false,"items":[{"create":{"status":201}}]} ',
], ids=repr)
def test_any_other_answer_is_decoded_in_full(data: bytes) -> None:
    assert AnswerSerializer().loads(data) == orjson.loads(data)


@pytest.mark.parametrize("data", [
    b'{"errors":false,"items":[<html>]}x',
    b'{"took":,"errors":false,"items":[]}',
], ids=repr)
def test_a_body_that_is_not_json_is_still_an_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        AnswerSerializer().loads(data)


def test_ready_ndjson_bytes_are_sent_as_they_are() -> None:
    body = b'{"create":{"_index":"i","_id":"a"}}\n{"x":1}\n'
    assert BulkBodySerializer().dumps(body) is body
    assert BulkBodySerializer().dumps([{"a": 1}, {"b": 2}]) == b'{"a":1}\n{"b":2}\n'
    assert BulkBodySerializer().dumps(b'{"a":1}') == b'{"a":1}\n'
