"""CORS: off by default; with --cors-origins, allowed origins get the headers (errors too)
and preflights are answered; other origins get nothing extra."""

from __future__ import annotations

import pytest

from sluice.api.settings import ApiSettings
from sluice.errors import ConfigError

pytestmark = pytest.mark.timeout(120)

ORIGIN = "https://dash.example.com"


async def test_off_by_default(api_client, seeded_prefix):
    client = await api_client(seeded_prefix)
    resp = await client.get("/api/v1/stats", headers={"Origin": ORIGIN})
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = await client.options("/api/v1/stats", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_allowed_origin_gets_the_headers(api_client, seeded_prefix):
    client = await api_client(seeded_prefix, cors_origins=(ORIGIN,))
    resp = await client.get("/api/v1/stats", headers={"Origin": ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in resp.headers.getall("Vary")
    error = await client.get("/api/v1/stats?from=soon", headers={"Origin": ORIGIN})
    assert error.status == 400 and error.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = await client.get("/api/v1/stats", headers={"Origin": "https://evil.example"})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers


async def test_preflight_is_answered(api_client, seeded_prefix):
    client = await api_client(seeded_prefix, cors_origins=(ORIGIN,))
    resp = await client.options("/api/v1/histogram", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization"


async def test_any_origin(api_client, seeded_prefix):
    client = await api_client(seeded_prefix, cors_origins=("*",))
    resp = await client.get("/healthz", headers={"Origin": "http://localhost:3000"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_origins_are_checked_at_startup():
    assert ApiSettings(cors_origins=(ORIGIN, "http://localhost:3000")).cors_origins
    for bad in ("dash.example.com", "https://x/path", "ftp://x"):
        with pytest.raises(ConfigError, match="cors_origins"):
            ApiSettings(cors_origins=(bad,))
