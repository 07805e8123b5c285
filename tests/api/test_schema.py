"""The served OpenAPI document against the real API, with schemathesis: no 5xx, and every
answer (status, content type, body) as the document says.

Every check runs except ``positive_data_acceptance``: some requests the schema cannot
rule out are still wrong (``from`` after ``to``, 2026-02-30, a cursor this API never
issued) and rightly get a 400, which that check counts as a failure.
``negative_data_rejection`` does run: what the schema forbids, the API refuses.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)


def schemathesis_cli() -> str:
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        pytest.fail(
            f"schemathesis is not installed for {sys.executable}: pip install 'schemathesis>=4' "
            "(or pip install -e .[test])",
            pytrace=False,
        )
    return str(cli)


def test_api_matches_its_openapi_document(api_process, seeded_prefix, tmp_path):
    cli = schemathesis_cli()
    api = api_process(seeded_prefix)
    cmd = [
        cli, "run", f"{api.url}/api/v1/openapi.json",
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "40",
        "--seed", "20261128",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
        "--report-dir", str(tmp_path / "report"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems:\n{output[-12000:]}"
    assert "No issues found" in output, output[-3000:]
    api.stop()
    assert "unhandled_error" not in "".join(api.log)


def test_every_route_is_documented_and_every_parameter_parsed():
    from sluice.api import params
    from sluice.api.app import build_app
    from sluice.api.openapi import openapi_document
    from sluice.api.settings import ApiSettings

    doc = openapi_document()
    app = build_app(ApiSettings(es_url="http://127.0.0.1:1", amqp_url=""))
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}
    assert routes - {"/", "/static/{name}"} == set(doc["paths"])
    declared = {
        "/api/v1/stats": params.STATS, "/api/v1/sensors": params.SENSORS,
        "/api/v1/histogram": params.HISTOGRAM, "/api/v1/measurements": params.MEASUREMENTS,
        "/api/v1/pipeline": params.PIPELINE, "/api/v1/metrics": params.METRICS,
    }
    for path, group in declared.items():
        assert [p["name"] for p in doc["paths"][path]["get"]["parameters"]] == [p.name for p in group]
