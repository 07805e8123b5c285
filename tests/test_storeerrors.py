"""sluice.storeerrors: the one classification of Elasticsearch errors, as a table, and
the bulk indexer's behaviour when the stand-in (or the proxy in front of it) answers with
each kind of error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, AsyncElasticsearch, ConnectionError

from sluice.errors import IndexingError, StoreUnavailable
from sluice.es import ensure_template, index_name, make_client
from sluice.parser.indexer import BulkIndexer, action_prefix, encode_create
from sluice.parser.stats import ParserMetrics
from sluice.storeerrors import RETRY_EXHAUSTED, classify, item_fault, request_fault, store_error
from tests.support.elasticsearch import EsOutage, FetchAll
from tests.support.metrics import sample

TS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
SHARDS = ("Validation Failed: 1: this action would add [2] shards, but this cluster "
          "currently has [1000]/[1000] maximum normal shards open;")


@pytest.mark.parametrize(
    ("status", "error_type", "text", "writing", "transient"),
    [
        (429, "es_rejected_execution_exception", "rejected execution", True, True),
        (429, "circuit_breaking_exception", "[parent] Data too large", True, True),
        (500, "", "", True, True),
        (502, "", "", True, True),
        (503, "unavailable_shards_exception", "primary shard is not active", True, True),
        (408, "", "", True, True),
        (0, "", "", True, True),  # no answer at all
        (403, "cluster_block_exception", "index [x] blocked by: [FORBIDDEN/8/index write]",
         True, True),
        (404, "index_not_found_exception", "no such index [x]", True, True),
        (404, "index_not_found_exception", "no such index [x]", False, False),
        (400, "validation_exception", SHARDS, True, True),
        (400, "illegal_argument_exception",
         "this action would add [5] total shards, but this cluster currently has "
         "[1000]/[1000] maximum shards open", True, True),
        (403, "security_exception", "action [indices:data/write/bulk] is unauthorized", True,
         True),
        (401, "", "", True, True),  # credentials
        (404, "", "", True, True),  # wrong URL path
        (400, "mapper_parsing_exception", "failed to parse field [value]", True, False),
        (400, "document_parsing_exception", "[1:10] failed to parse field [value]", True, False),
        (400, "illegal_argument_exception", "Limit of total fields [1000] has been exceeded",
         True, False),
        (400, "strict_dynamic_mapping_exception", "mapping set to strict", True, False),
        (400, "", "", True, False),
        (413, "", "", True, False),
        (400, "some_future_exception", "?", True, False),
    ],
)
def test_classification_table(
    status: int, error_type: str, text: str, writing: bool, transient: bool
) -> None:
    """Type first, then status: the table in the module's docstring, row by row."""
    assert classify(status, error_type, text, writing=writing) is transient


def test_item_fault_names_the_reason_and_keeps_the_cause() -> None:
    """A content error becomes ``es_<type>`` with the reason and its cause in the detail."""
    fault = item_fault(400, {
        "type": "mapper_parsing_exception", "reason": "failed to parse field [value]",
        "caused_by": {"type": "number_format_exception", "reason": 'For input string: "warm"'},
    })
    assert (fault.transient, fault.reason) == (False, "es_mapper_parsing_exception")
    assert fault.detail == (
        '400 mapper_parsing_exception: failed to parse field [value]: For input string: "warm"'
    )
    shard = item_fault(400, {"type": "validation_exception", "reason": SHARDS})
    assert shard.transient and shard.reason == "es_validation_exception"
    assert item_fault(400, "plain text").reason == "es_400"


def _api_error(status: int, body: Any) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "h", 9200))
    return ApiError(str(body), meta, body)


def test_request_fault_reads_the_error_body_of_a_whole_request() -> None:
    """Whole-request errors are judged the same way, from the body's ``error``."""
    block = _api_error(403, {"error": {
        "type": "cluster_block_exception", "reason": "blocked by: [FORBIDDEN/12/index read-only]",
        "root_cause": [{"type": "cluster_block_exception", "reason": "index read-only"}],
    }, "status": 403})
    assert request_fault(block, "bulk").transient
    assert isinstance(store_error(block), StoreUnavailable)
    mapping = _api_error(400, {"error": {"type": "x_content_parse_exception",
                                         "reason": "[1:2] Unexpected character"}})
    fault = request_fault(mapping, "bulk")
    assert not fault.transient and fault.reason == "es_x_content_parse_exception"
    assert type(store_error(mapping)) is IndexingError
    assert request_fault(ConnectionError("refused"), "bulk").transient


# -- against the stand-in -----------------------------------------------------------------


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(es_url, max_retries=0)
    try:
        yield client
    finally:
        await client.close()


def _actions(prefix: str, ids: list[str]) -> list[bytes]:
    head = action_prefix(index_name(prefix, "measurement", TS))
    return [encode_create(head, i, orjson.dumps({"id": i, "value": 1.5, "ts": TS})) for i in ids]


async def _stored(fetch: FetchAll, prefix: str) -> list[str]:
    return sorted(h["_id"] for h in await fetch(f"{prefix}-measurement-*"))


async def test_a_write_blocked_index_is_retried_then_exhausted_never_refused_for_content(
    es: AsyncElasticsearch, es_index_prefix: str, es_fetch_all: FetchAll
) -> None:
    """The stand-in's own 403 ``cluster_block_exception`` per item: retried, and after
    ``item_retry_limit`` retries refused as ``es_retry_exhausted``; once the block is
    lifted, the same records are stored."""
    await ensure_template(es, es_index_prefix)
    index = index_name(es_index_prefix, "measurement", TS)
    await es.indices.create(index=index)
    await es.indices.put_settings(index=index, settings={"index.blocks.write": True})
    metrics = ParserMetrics()
    indexer = BulkIndexer(es, metrics, retry_cap=0.02, item_retry_limit=3)
    outcome = await indexer.index(_actions(es_index_prefix, ["a", "b"]))
    assert outcome.attempts == 4 and outcome.indexed == 0
    assert [(r.position, r.reason) for r in outcome.refused] == [
        (0, RETRY_EXHAUSTED), (1, RETRY_EXHAUSTED)
    ]
    assert "cluster_block_exception" not in outcome.refused[0].reason
    assert "blocked" in outcome.refused[0].error
    assert sample(metrics.registry, "sluice_parser_bulk_retries_total", cause="item") == 3
    await es.indices.put_settings(index=index, settings={"index.blocks.write": False})
    again = await indexer.index(_actions(es_index_prefix, ["a", "b"]))
    assert (again.indexed, again.refused) == (2, [])
    assert await _stored(es_fetch_all, es_index_prefix) == ["a", "b"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, {"type": "index_not_found_exception", "reason": "no such index [x]"}),
        (400, {"type": "validation_exception", "reason": SHARDS}),
        (429, {"type": "es_rejected_execution_exception", "reason": "queue full"}),
    ],
)
async def test_transient_item_errors_are_retried_until_they_pass(
    es: AsyncElasticsearch, es_index_prefix: str, es_fetch_all: FetchAll, es_outage: EsOutage,
    status: int, error: dict[str, str],
) -> None:
    """Auto-create off, the shard limit and a full write queue (injected per item by the
    proxy) keep good records out of the dead-letter queue: they are stored once the cause
    is gone, and the items beside them are stored at once."""
    await ensure_template(es, es_index_prefix)
    es_outage.fail_items({"b", "c"}, status, error)
    answers = 0

    def on_state(up: bool) -> None:
        nonlocal answers
        answers += 1
        if answers == 3:  # the cause is fixed while the indexer retries
            es_outage.clear_faults()

    indexer = BulkIndexer(es, ParserMetrics(), retry_cap=0.05, on_store_state=on_state)
    outcome = await indexer.index(_actions(es_index_prefix, ["a", "b", "c", "d"]))
    assert (outcome.indexed, outcome.refused, outcome.attempts) == (4, [], 4)
    assert await _stored(es_fetch_all, es_index_prefix) == ["a", "b", "c", "d"]


async def test_whole_request_cluster_block_and_shard_limit_are_retried_not_split(
    es: AsyncElasticsearch, es_index_prefix: str, es_fetch_all: FetchAll, es_outage: EsOutage,
) -> None:
    """A whole bulk answered 403 cluster block or 400 shard limit is retried whole (the
    store is "down" meanwhile); a content refusal of the whole request would be split."""
    await ensure_template(es, es_index_prefix)
    states: list[bool] = []
    faults = [
        (403, {"type": "cluster_block_exception", "reason": "blocked by: [FORBIDDEN/12/]"}),
        (400, {"type": "validation_exception", "reason": SHARDS}),
    ]

    def on_state(up: bool) -> None:
        states.append(up)
        if faults:
            es_outage.pause(*faults.pop(0))
        else:
            es_outage.resume()

    es_outage.pause(403, {"type": "cluster_block_exception", "reason": "blocked"})
    indexer = BulkIndexer(es, ParserMetrics(), retry_cap=0.05, on_store_state=on_state)
    outcome = await indexer.index(_actions(es_index_prefix, ["a", "b", "c"]))
    assert (outcome.indexed, outcome.refused) == (3, [])
    assert outcome.attempts == 4
    assert states == [False, False, False, True]
    assert await _stored(es_fetch_all, es_index_prefix) == ["a", "b", "c"]
