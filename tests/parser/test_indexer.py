"""The bulk indexer: per-item results, retries with backoff, against a scripted endpoint
and against the Elasticsearch stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from sluice.errors import StoreUnavailable
from sluice.es import ensure_template, index_name, make_client
from sluice.parser.indexer import BulkIndexer, action_prefix, encode_create
from sluice.parser.stats import ParserMetrics
from tests.support.metrics import sample
from tests.support.rabbitmq import free_port

_PRODUCT = {"X-Elastic-Product": "Elasticsearch"}


class ScriptedEs:
    """Answers ``_bulk`` from a script: each entry is a whole-request status, or a list
    of per-item statuses. Records the ids sent in every request."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.requests: list[list[str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _bulk(self, request: web.Request) -> web.Response:
        lines = (await request.read()).splitlines()
        ids = [json.loads(line)["create"]["_id"] for line in lines[::2]]
        self.requests.append(ids)
        step = self.script.pop(0) if self.script else [201] * len(ids)
        if step == "html":  # a proxy answering for Elasticsearch
            return web.Response(text="<html>maintenance</html>", content_type="text/html",
                                headers=_PRODUCT)
        if step == "no-status":
            return web.json_response({"errors": True, "items": [{"create": {}}] * len(ids)},
                                     headers=_PRODUCT)
        if isinstance(step, int):
            return web.json_response({"error": "scripted", "status": step}, status=step,
                                     headers=_PRODUCT)
        items = []
        for status in step:
            item: dict[str, Any] = {"status": status}
            if status >= 300:
                item["error"] = {"type": f"type_{status}", "reason": f"reason {status}"}
            items.append({"create": item})
        return web.json_response({"errors": any(s >= 300 for s in step), "items": items},
                                 headers=_PRODUCT)

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response({"version": {"number": "9.0.0"}}, headers=_PRODUCT)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/_bulk", self._bulk)
        app.router.add_put("/_bulk", self._bulk)
        app.router.add_route("*", "/{tail:.*}", self._root)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedEs]:
    server = ScriptedEs()
    await server.start()
    yield server
    await server.close()


def actions(ids: list[str], index: str = "t-measurement-2024.01.01") -> list[bytes]:
    prefix = action_prefix(index)
    return [encode_create(prefix, i, orjson.dumps({"id": i, "value": 1.0})) for i in ids]


async def test_each_item_status_is_read_and_only_retryable_items_are_resent(
    scripted: ScriptedEs,
) -> None:
    scripted.script = [[201, 409, 400, 429, 503, 201], [201, 201]]
    metrics = ParserMetrics()
    client = make_client(scripted.url, max_retries=0)
    try:
        indexer = BulkIndexer(client, metrics, retry_cap=0.1)
        outcome = await indexer.index(actions(["a", "b", "c", "d", "e", "f"]))
    finally:
        await client.close()
    assert (outcome.indexed, outcome.duplicates, outcome.attempts) == (4, 1, 2)
    assert [(r.position, r.status, r.reason) for r in outcome.refused] == [
        (2, 400, "es_type_400")
    ]
    assert "reason 400" in outcome.refused[0].error
    assert scripted.requests == [["a", "b", "c", "d", "e", "f"], ["d", "e"]]
    assert sample(metrics.registry, "sluice_parser_bulk_retries_total", cause="item") == 1
    assert sample(metrics.registry, "sluice_parser_records_indexed_total") == 4
    assert sample(metrics.registry, "sluice_parser_records_duplicate_total") == 1


async def test_a_failed_request_is_retried_whole_until_it_works(scripted: ScriptedEs) -> None:
    scripted.script = [503, 429, 502]
    metrics = ParserMetrics()
    states: list[bool] = []
    client = make_client(scripted.url, max_retries=0)
    try:
        indexer = BulkIndexer(client, metrics, retry_cap=0.1, on_store_state=states.append)
        outcome = await indexer.index(actions(["a", "b"]))
    finally:
        await client.close()
    assert (outcome.indexed, outcome.attempts) == (2, 4)
    assert scripted.requests == [["a", "b"]] * 4
    assert sample(metrics.registry, "sluice_parser_bulk_retries_total", cause="request") == 3
    assert states == [False, False, False, True]


async def test_max_retries_gives_up_with_store_unavailable() -> None:
    # Nothing listens on this port: every attempt is a refused connection.
    client = make_client(f"http://127.0.0.1:{free_port()}", max_retries=0)
    metrics = ParserMetrics()
    try:
        indexer = BulkIndexer(client, metrics, retry_cap=0.05, max_retries=2)
        with pytest.raises(StoreUnavailable):
            await indexer.index(actions(["a"]))
    finally:
        await client.close()
    assert sample(metrics.registry, "sluice_parser_bulk_retries_total", cause="request") == 3


async def test_against_elasticsearch_duplicates_and_refusals(
    es_url: str, es_index_prefix: str, es_fetch_all: Any
) -> None:
    index = index_name(es_index_prefix, "measurement", 1_700_000_000_000)
    prefix = action_prefix(index)
    docs = [{"id": f"d{i}", "sensor": "s", "metric": "m", "value": i * 1.5,
             "@timestamp": "2023-11-14T22:13:20.000Z"} for i in range(5)]
    good = [encode_create(prefix, d["id"], orjson.dumps(d)) for d in docs]
    bad = encode_create(prefix, "bad", orjson.dumps({"id": "bad", "value": "warm"}))
    client = make_client(es_url, max_retries=0)
    try:
        await ensure_template(client, es_index_prefix)
        indexer = BulkIndexer(client, ParserMetrics(), retry_cap=0.1)
        first = await indexer.index([*good[:3], bad])
        second = await indexer.index(good)
    finally:
        await client.close()
    assert (first.indexed, first.duplicates) == (3, 0)
    [refusal] = first.refused
    assert (refusal.position, refusal.status) == (3, 400)
    # osmem: mapper_parsing_exception; Elasticsearch 8.6+: document_parsing_exception
    assert refusal.reason in {"es_mapper_parsing_exception", "es_document_parsing_exception"}
    assert (second.indexed, second.duplicates, second.refused) == (2, 3, [])
    hits = await es_fetch_all(f"{es_index_prefix}-*")
    assert sorted((h["_id"], h["_source"]["value"]) for h in hits) == sorted(
        (d["id"], d["value"]) for d in docs
    )


def test_encode_create_is_two_ndjson_lines() -> None:
    line = encode_create(action_prefix("p-k-2024.01.01"), 'we"ird', b'{"a":1}')
    action, source, rest = line.split(b"\n")
    assert orjson.loads(action) == {"create": {"_index": "p-k-2024.01.01", "_id": 'we"ird'}}
    assert orjson.loads(source) == {"a": 1}
    assert rest == b""



async def test_a_request_refused_whole_is_split_down_to_the_refused_action(
    scripted: ScriptedEs,
) -> None:
    scripted.script = [400, 413, [201], 400, [201, 201]]
    states: list[bool] = []
    client = make_client(scripted.url, max_retries=0)
    try:
        indexer = BulkIndexer(client, ParserMetrics(), retry_cap=0.1,
                              on_store_state=states.append)
        outcome = await indexer.index(actions(["a", "b", "c", "d"]))
    finally:
        await client.close()
    assert scripted.requests == [["a", "b", "c", "d"], ["a", "b"], ["a"], ["b"], ["c", "d"]]
    assert (outcome.indexed, outcome.duplicates) == (3, 0)
    assert [(r.position, r.status, r.reason) for r in outcome.refused] == [(1, 400, "es_400")]
    # A refused request does not say the store is up (nor down).
    assert states == [True, True]


async def test_auth_errors_and_non_bulk_answers_are_retried_with_the_store_down(
    scripted: ScriptedEs,
) -> None:
    scripted.script = [401, "html", "no-status", [201, 201]]
    states: list[bool] = []
    client = make_client(scripted.url, max_retries=0)
    try:
        indexer = BulkIndexer(client, ParserMetrics(), retry_cap=0.05,
                              on_store_state=states.append)
        outcome = await indexer.index(actions(["a", "b"]))
    finally:
        await client.close()
    assert (outcome.indexed, outcome.refused, outcome.attempts) == (2, [], 4)
    assert scripted.requests == [["a", "b"]] * 4
    assert states[:2] == [False, False] and states[-1] is True
