"""Elasticsearch down, failing or silent: JSON 503s and ``/readyz`` false; back by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sluice.api.app import build_app
from sluice.api.settings import ApiSettings

from .test_aggregations import get_json

pytestmark = pytest.mark.timeout(180)

DATA_PATHS = [
    "/api/v1/stats",
    "/api/v1/sensors",
    "/api/v1/histogram",
    "/api/v1/histogram?from=2026-11-20&to=2026-11-21",
    "/api/v1/measurements",
    "/api/v1/pipeline",
]


async def eventually_ok(client, path: str, deadline_s: float = 60.0) -> dict:
    deadline = time.monotonic() + deadline_s
    while True:
        resp = await client.get(path)
        if resp.status == 200:
            return await resp.json()
        assert time.monotonic() < deadline, f"{path} still {resp.status} after the store came back"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("mode", ["refused", "answers 503"])
async def test_store_outage_gives_503_and_recovers(api_client, seeded_prefix, measurements, es_outage, mode):
    client = await api_client(seeded_prefix)
    assert (await get_json(client, "/api/v1/stats"))["count"] == len(measurements)

    es_outage.pause(status=503 if mode == "answers 503" else None)
    for path in DATA_PATHS:
        body = await get_json(client, path, status=503)
        assert body == {"error": {"status": 503, "code": "store_unavailable",
                                  "message": "Elasticsearch is unavailable; try again shortly"}}
        resp = await client.get(path)
        assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
    ready = await get_json(client, "/readyz", status=503)
    assert ready == {"ready": False, "checks": {"elasticsearch": False}}
    assert await get_json(client, "/healthz") == {"status": "ok"}
    # Parameters are still checked while the store is away.
    assert (await get_json(client, "/api/v1/stats?size=1", status=400))["error"]["code"] == "unknown_parameter"

    es_outage.resume()
    await eventually_ok(client, "/readyz")
    stats = await eventually_ok(client, "/api/v1/stats")
    assert stats["count"] == len(measurements)
    for path in DATA_PATHS:
        await get_json(client, path)


@pytest.fixture
async def silent_store() -> AsyncIterator[str]:
    """An HTTP server that accepts requests and never answers: a hung Elasticsearch."""
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    never.set()
    await runner.cleanup()


async def test_store_timeout_gives_503(silent_store):
    from aiohttp.test_utils import TestClient, TestServer

    settings = ApiSettings(es_url=silent_store, index_prefix="sluice", kinds=("measurement",),
                           amqp_url="", es_timeout=0.3)
    app = build_app(settings, install_template=False)
    async with TestClient(TestServer(app)) as client:
        body = await get_json(client, "/api/v1/stats", status=503)
        assert body["error"]["code"] == "store_unavailable"
        assert (await get_json(client, "/readyz", status=503))["ready"] is False
