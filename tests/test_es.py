"""sluice.es: index naming, the template, and how the server treats what the parser sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import ApiError, AsyncElasticsearch, ConnectionError

from sluice.errors import IndexingError, StoreUnavailable
from sluice.es import (
    DEAD_LETTER_KEYWORD_FIELDS,
    ERROR_IGNORE_ABOVE,
    KEYWORD_FIELDS,
    TEMPLATE_PRIORITY,
    ensure_template,
    index_name,
    index_pattern,
    index_template,
    make_client,
    store_error,
)
from tests.support.elasticsearch import EsOutage, FetchAll

DAY_MS = 86_400_000
TS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.fixture
async def es(es_url: str) -> AsyncIterator[AsyncElasticsearch]:
    client = make_client(es_url)
    try:
        yield client
    finally:
        await client.close()


def doc(i: int, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"r{i}",
        "sensor": f"s{i % 3}",
        "metric": "temp",
        "unit": "C",
        "parser": "measurement",
        "value": i * 1.5,
        "@timestamp": TS + i * 1000,
        "ingested_at": "2024-01-01T00:00:05Z",
        "tags": {"site": "north", "rack": str(i % 2)},
    }
    body.update(over)
    return body


@pytest.mark.parametrize(
    ("ts_ms", "expected"),
    [
        (0, "sluice-measurement-1970.01.01"),
        (TS, "sluice-measurement-2024.01.01"),
        (TS + DAY_MS - 1, "sluice-measurement-2024.01.01"),
        (TS + DAY_MS, "sluice-measurement-2024.01.02"),
        (TS + 0.5, "sluice-measurement-2024.01.01"),
        (-1, "sluice-measurement-1969.12.31"),
    ],
)
def test_index_name_is_the_utc_day_of_the_timestamp(ts_ms: float, expected: str) -> None:
    """Daily indices follow the UTC calendar day of ``@timestamp``, whatever the local zone."""
    assert index_name("sluice", "measurement", ts_ms) == expected


@pytest.mark.parametrize(
    ("prefix", "kind", "ts_ms"),
    [
        ("Sluice", "measurement", TS),
        ("sluice", "Measurement", TS),
        ("sluice", "a-b", TS),
        ("sluice", "*", TS),
        ("_x", "measurement", TS),
        ("sluice", "measurement", float("nan")),
        ("sluice", "measurement", float("inf")),
        ("sluice", "measurement", 1e20),
    ],
)
def test_index_name_rejects_what_cannot_name_an_index(prefix: str, kind: str, ts_ms: float) -> None:
    """Bad prefixes, kinds and timestamps fail with ValueError instead of a server error."""
    with pytest.raises(ValueError, match=r"invalid|timestamp"):
        index_name(prefix, kind, ts_ms)


def test_index_pattern_covers_one_kind_or_all() -> None:
    """Patterns match the daily indices of one kind, or of every kind by default."""
    assert index_pattern("sluice") == "sluice-*-*"
    assert index_pattern("sluice", "measurement") == "sluice-measurement-*"
    with pytest.raises(ValueError, match="invalid record kind"):
        index_pattern("sluice", "a-b")


def test_index_template_maps_every_field_explicitly() -> None:
    """The template covers ``<prefix>-*`` with keywords, a double, dates and keyword tags."""
    body = index_template("abc")
    assert body["index_patterns"] == ["abc-*"]
    assert body["priority"] == TEMPLATE_PRIORITY
    mappings = body["template"]["mappings"]
    props = mappings["properties"]
    for name in KEYWORD_FIELDS:
        assert props[name] == {"type": "keyword"}
    # The parser's dead-letter event documents (<prefix>-dead-*), counted by reason.
    for name in ("reason", "source_message_id", "record_id", "instance"):
        assert name in DEAD_LETTER_KEYWORD_FIELDS
        assert props[name] == {"type": "keyword"}
    assert props["error"] == {"type": "keyword", "ignore_above": ERROR_IGNORE_ABOVE}
    assert props["value"]["type"] == "double"
    assert props["@timestamp"]["type"] == "date"
    assert props["ingested_at"]["type"] == "date"
    (tags_rule,) = mappings["dynamic_templates"]
    assert next(iter(tags_rule.values()))["path_match"] == "tags.*"
    assert "flattened" not in str(body)


def test_make_client_accepts_a_comma_separated_list() -> None:
    """SLUICE_ES_URL may name several nodes."""
    client = make_client("http://a:9200, http://b:9201")
    nodes = sorted(f"{n.host}:{n.port}" for n in client.transport.node_pool.all())
    assert nodes == ["a:9200", "b:9201"]
    with pytest.raises(ValueError, match="no Elasticsearch URL"):
        make_client(" , ")


async def test_template_is_installed_idempotently_and_shapes_daily_indices(
    es: AsyncElasticsearch, es_index_prefix: str
) -> None:
    """ensure_template can run in every process; a new daily index gets its mapping."""
    await ensure_template(es, es_index_prefix)
    await ensure_template(es, es_index_prefix)
    got = await es.indices.get_index_template(name=es_index_prefix)
    (tpl,) = got["index_templates"]
    assert tpl["index_template"]["index_patterns"] == [f"{es_index_prefix}-*"]

    index = index_name(es_index_prefix, "measurement", TS)
    await es.create(index=index, id="r1", document=doc(1), refresh=True)
    mapping = (await es.indices.get_mapping(index=index))[index]["mappings"]["properties"]
    assert {name: mapping[name]["type"] for name in ("id", "sensor", "metric", "unit", "parser")} == {
        name: "keyword" for name in ("id", "sensor", "metric", "unit", "parser")
    }
    assert mapping["value"]["type"] == "double"
    assert mapping["@timestamp"]["type"] == "date"
    assert mapping["ingested_at"]["type"] == "date"
    assert mapping["tags"]["properties"]["site"]["type"] == "keyword"


async def test_bulk_create_answers_201_then_409_and_400_per_item(
    es: AsyncElasticsearch, es_index_prefix: str, es_fetch_all: FetchAll
) -> None:
    """``create`` with an explicit ``_id`` makes a resend a 409, and a bad value a 400."""
    await ensure_template(es, es_index_prefix)
    ops: list[dict[str, Any]] = []
    for i in range(3):
        ops += [
            {"create": {"_index": index_name(es_index_prefix, "measurement", TS), "_id": f"r{i}"}},
            doc(i),
        ]
    bad = [
        {"create": {"_index": index_name(es_index_prefix, "measurement", TS), "_id": "bad"}},
        doc(9, value="not a number"),
    ]
    first = await es.bulk(operations=ops + bad)
    assert [item["create"]["status"] for item in first["items"]] == [201, 201, 201, 400]
    assert first["items"][3]["create"]["error"]["type"] == "mapper_parsing_exception"

    again = await es.bulk(operations=ops[:2])
    assert again["items"][0]["create"]["status"] == 409
    assert again["items"][0]["create"]["error"]["type"] == "version_conflict_engine_exception"

    hits = await es_fetch_all(index_pattern(es_index_prefix), page_size=2)
    assert sorted(h["_id"] for h in hits) == ["r0", "r1", "r2"]
    assert term_count(hits, "site", "north") == 3


def term_count(hits: list[dict[str, Any]], tag: str, value: str) -> int:
    return sum(1 for h in hits if h["_source"]["tags"].get(tag) == value)


async def test_outage_becomes_store_unavailable(es_url: str, es_outage: EsOutage, es_index_prefix: str) -> None:
    """Refused connections classify as retryable; the same client works after resume."""
    client = make_client(es_url, max_retries=0, request_timeout=5)
    try:
        with es_outage.paused():
            with pytest.raises(ConnectionError) as caught:
                await client.info()
            assert isinstance(store_error(caught.value), StoreUnavailable)
        await ensure_template(client, es_index_prefix)
    finally:
        await client.close()


async def test_store_error_tells_retryable_from_permanent(
    es: AsyncElasticsearch, es_url: str, es_outage: EsOutage
) -> None:
    """4xx is permanent (IndexingError), 503 is retryable (StoreUnavailable)."""
    with pytest.raises(ApiError) as missing:
        await es.get(index="no-such-index-here", id="x")
    err = store_error(missing.value)
    assert type(err) is IndexingError

    client = make_client(es_url, max_retries=0)
    try:
        with es_outage.paused(status=503), pytest.raises(ApiError) as unavailable:
            await client.info()
    finally:
        await client.close()
    assert isinstance(store_error(unavailable.value), StoreUnavailable)
