"""The latest measurements, paginated with a cursor: every record exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import BASE_TS

from .expected import matching
from .test_aggregations import get_json

pytestmark = pytest.mark.timeout(120)

HOUR = 3_600_000


async def walk(client: Any, query: str, size: int) -> tuple[list[dict[str, Any]], int, int]:
    """Follow next_cursor to the end: (documents in order, pages, total reported)."""
    docs: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    totals = set()
    while True:
        path = f"/api/v1/measurements?size={size}&{query}"
        if cursor:
            path += f"&cursor={cursor}"
        page = await get_json(client, path)
        pages += 1
        totals.add(page["total"])
        assert len(page["measurements"]) <= size
        docs.extend(page["measurements"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["measurements"]) == size, "only the last page may be short"
        assert pages < 10_000
    assert len(totals) == 1, "the total does not depend on the page"
    return docs, pages, totals.pop()


def newest_first(docs: list[dict[str, Any]]) -> list[str]:
    return [d["id"] for d in sorted(docs, key=lambda d: (d["ts"], d["id"]), reverse=True)]


@pytest.mark.parametrize("size", [1, 37, 100, 600, 1000])
async def test_pagination_visits_every_record_once(api_client, seeded_prefix, measurements, size):
    client = await api_client(seeded_prefix)
    docs, pages, total = await walk(client, "", size)
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "a record was repeated"
    assert set(ids) == {d["id"] for d in measurements}, "a record was missed"
    assert ids == newest_first(measurements)
    assert total == len(measurements)
    assert pages == -(-len(measurements) // size)


async def test_pagination_with_filters(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    start, end = BASE_TS + 6 * HOUR, BASE_TS + 40 * HOUR
    query = f"metric=humidity&tag=site:north&from={start}&to={end}"
    docs, _, total = await walk(client, query, 7)
    want = matching(measurements, metric="humidity", tags=[("site", "north")], start=start, end=end)
    assert [d["id"] for d in docs] == newest_first(want)
    assert total == len(want)


async def test_documents_come_back_as_stored(api_client, seeded_prefix, measurements):
    client = await api_client(seeded_prefix)
    page = await get_json(client, "/api/v1/measurements?size=5")
    by_id = {d["id"]: d for d in measurements}
    for doc in page["measurements"]:
        assert doc == by_id[doc["id"]]


async def test_ties_on_timestamp_are_broken_by_id(api_client, es_url, es_index_prefix):
    from tests.support.api import index_documents, make_measurements

    docs = make_measurements(50, seed=3)
    for d in docs:  # all at the same instant
        d["ts"], d["@timestamp"] = BASE_TS, "2026-11-20T00:00:00.000Z"
    await index_documents(es_url, es_index_prefix, docs)
    client = await api_client(es_index_prefix)
    got, pages, _ = await walk(client, "", 4)
    assert [d["id"] for d in got] == sorted((d["id"] for d in docs), reverse=True)
    assert pages == 13


async def test_a_cursor_from_elsewhere_is_refused(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    for bad in ["abc", "WzEsMl0", "eyJhIjoxfQ", "!!!", "W251bGwsIngiXQ"]:
        body = await get_json(client, f"/api/v1/measurements?cursor={bad}", status=400)
        assert body["error"]["code"] == "bad_parameter"
        assert "'cursor'" in body["error"]["message"]
