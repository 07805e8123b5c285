"""The store refuses partial answers: a failed shard or a timed-out search is a 503."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from sluice.api.responses import ApiError
from sluice.api.store import Store


class FakeClient:
    """Answers every search with ``body`` and remembers the arguments."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.calls: list[dict[str, Any]] = []

    async def search(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return SimpleNamespace(body=self.body)

    async def close(self) -> None:
        pass


def _body(*, failed: int = 0, timed_out: bool = False) -> dict[str, Any]:
    return {
        "took": 3, "timed_out": timed_out,
        "_shards": {"total": 4, "successful": 4 - failed, "skipped": 0, "failed": failed},
        "hits": {"total": {"value": 12, "relation": "eq"}, "hits": []},
    }


def _store(client: FakeClient) -> Store:
    return Store("http://unused:9200", "sluice", ["measurement"], timeout=1.0,
                 client=client)  # type: ignore[arg-type]


async def test_complete_answers_pass_and_partial_results_are_not_allowed():
    client = FakeClient(_body())
    store = _store(client)
    assert (await store.search({"size": 0}))["hits"]["total"]["value"] == 12
    assert client.calls[0]["allow_partial_search_results"] is False


@pytest.mark.parametrize("body", [_body(failed=1), _body(timed_out=True), _body(failed=4, timed_out=True)])
async def test_partial_answers_are_503(body):
    store = _store(FakeClient(body))
    with pytest.raises(ApiError) as info:
        await store.search({"size": 0})
    assert info.value.status == 503
    assert info.value.code == "store_unavailable"


def test_ingest_rate_is_over_exactly_the_window():
    from sluice.api import queries

    now = 1_795_910_437_250  # 37.25 s into a minute
    window_start, bucket_start, end = queries.ingest_window(now, 15)
    assert end - window_start == 15 * 60_000
    assert bucket_start % 60_000 == 0 and window_start < bucket_start <= now < bucket_start + 15 * 60_000
    body = queries.ingest_body(window_start, bucket_start, end)
    assert body["aggs"]["window"]["filter"]["range"]["ingested_at"] == {
        "gte": window_start, "lt": end, "format": "epoch_millis"}
    minutes = [bucket_start + i * 60_000 for i in range(15)]
    resp = {
        "hits": {"total": {"value": 960, "relation": "eq"}},
        "aggregations": {
            "window": {"doc_count": 900},
            "per_interval": {"doc_count": 880, "histogram": {"buckets": [
                {"key": bucket_start - 60_000, "doc_count": 60},  # outside: dropped
                *({"key": m, "doc_count": 60 if m < minutes[-1] else 40} for m in minutes),
            ]}},
        },
    }
    result = queries.ingest_result(resp, window_start, bucket_start, end)
    assert result["count"] == 900
    assert result["rate_per_s"] == 900 / (15 * 60)
    assert [b["ts"] for b in result["buckets"]] == minutes
    assert result["buckets"][-1]["count"] == 40
