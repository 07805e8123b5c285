"""The registry every service builds (``ops.service_registry``) and ``/metrics`` as the
ops port serves it, read back with prometheus_client's parser."""

from __future__ import annotations

import sys

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, Counter

import sluice
from sluice.ops import OpsServer, service_registry
from tests.support.metrics import parse_metrics, sample


def test_service_registry_has_build_info_and_process_metrics() -> None:
    """Build info carries the installed version; process and Python metrics describe this process."""
    registry = service_registry()
    assert sample(registry, "sluice_build_info", version=sluice.__version__) == 1
    assert sample(registry, "process_cpu_seconds_total") > 0
    assert sample(registry, "process_resident_memory_bytes") > 0
    assert sample(registry, "process_open_fds") >= 3  # stdin, stdout, stderr at least
    major, minor = sys.version_info[:2]
    assert registry.get_sample_value(
        "python_info", {"implementation": "CPython", "major": str(major), "minor": str(minor),
                        "patchlevel": str(sys.version_info[2]),
                        "version": f"{major}.{minor}.{sys.version_info[2]}"}) == 1


def test_registries_are_separate() -> None:
    """Two services in one process keep their own counts under the same metric names."""
    first, second = service_registry(), service_registry()
    one = Counter("sluice_test_events_total", "events", ("code",), registry=first)
    Counter("sluice_test_events_total", "events", ("code",), registry=second)
    one.labels("a").inc(3)
    assert sample(first, "sluice_test_events_total", code="a") == 3
    assert sample(second, "sluice_test_events_total", code="a") == 0


async def test_ops_metrics_serves_the_registry_in_prometheus_text() -> None:
    """/metrics has the exposition content type and every sample, label values escaped."""
    registry = service_registry()
    errors = Counter("sluice_test_errors_total", "errors by code", ("code",), registry=registry)
    errors.labels("bad_frame").inc(2)
    errors.labels('we"ird\n').inc()
    ops = OpsServer(registry, lambda: {"ok": True}, "127.0.0.1", 0)
    await ops.start()
    try:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{ops.bound_port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await resp.text()
    finally:
        await ops.close()
    metrics = parse_metrics(text)
    assert metrics['sluice_test_errors_total{code="bad_frame"}'] == 2
    assert metrics['sluice_test_errors_total{code="we"ird\n"}'] == 1
    assert metrics["sluice_test_errors_total"] == 3
    assert metrics[f'sluice_build_info{{version="{sluice.__version__}"}}'] == 1
    assert metrics["process_resident_memory_bytes"] > 0
