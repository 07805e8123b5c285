"""Bearer tokens on the API: 401 without a valid token, 403 without the read scope,
probes and the dashboard page open, and the data served to a reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sluice.auth import hash_token, new_token


def token_file(tmp_path: Path) -> tuple[str, str, str]:
    reader, ingester = new_token(), new_token()
    path = tmp_path / "api-tokens"
    path.write_text(f"reader {hash_token(reader)} read\ningester {hash_token(ingester)} ingest:*\n")
    return str(path), reader, ingester


async def test_data_needs_a_read_token(api_client: Any, seeded_prefix: str, measurements: list[dict[str, Any]],
                                       tmp_path: Path) -> None:
    tokens, reader, ingester = token_file(tmp_path)
    client = await api_client(seeded_prefix, token_file=tokens)
    for path in ("/api/v1/stats", "/metrics", "/api/v1/pipeline"):
        response = await client.get(path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json())["error"]["code"] == "unauthorized"
        wrong = await client.get(path, headers={"Authorization": "Bearer " + new_token()})
        assert wrong.status == 401, path
        basic = await client.get(path, headers={"Authorization": "Basic " + reader})
        assert basic.status == 401, path
        forbidden = await client.get(path, headers={"Authorization": f"Bearer {ingester}"})
        assert forbidden.status == 403, path
        assert (await forbidden.json())["error"]["code"] == "forbidden"
    allowed = await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {reader}"})
    assert allowed.status == 200
    assert (await allowed.json())["count"] == len(measurements)
    metrics = await client.get("/metrics", headers={"Authorization": f"Bearer {reader}"})
    assert metrics.status == 200 and "sluice_api_requests_total" in await metrics.text()


async def test_probes_and_page_stay_open(api_client: Any, seeded_prefix: str, tmp_path: Path) -> None:
    tokens, _, _ = token_file(tmp_path)
    client = await api_client(seeded_prefix, token_file=tokens)
    for path in ("/healthz", "/", "/api/v1/openapi.json"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/readyz")).status in (200, 503)
