from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sluice.client.main import ClientSettings
from sluice.client.runner import run

from .fakes import FakeServer


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    yield server
    await server.close()


async def test_stop_finishes_what_is_in_flight_and_loses_nothing(fake: FakeServer) -> None:
    port = await fake.start()
    # No --count and no --duration: it would stream forever; the stop ends it.
    settings = ClientSettings(target=f"127.0.0.1:{port}", connections=2, batch_size=100, seed=1,
                              instance_id="runner-test")
    stop = asyncio.Event()
    task = asyncio.ensure_future(run(settings, stop=stop, progress=False))
    for _ in range(10_000):
        if len(fake.acked) >= 5:
            break
        await asyncio.sleep(0.001)
    stop.set()
    summary = await asyncio.wait_for(task, 60)
    assert summary.failed == 0
    assert summary.produced == summary.acked > 0
    assert len(fake.acked_records()) == summary.acked


async def test_generator_run_sends_exactly_count_with_a_seed(fake: FakeServer) -> None:
    port = await fake.start()
    settings = ClientSettings(target=f"127.0.0.1:{port}", connections=3, batch_size=64, count=1000,
                              seed=5, instance_id="runner-test", sensors=3)
    summary = await run(settings, progress=False)
    assert (summary.produced, summary.sent, summary.acked, summary.failed) == (1000, 1000, 1000, 0)
    assert summary.seed == 5
    ids = [r["id"] for r in fake.acked_records()]
    assert len(ids) == len(set(ids)) == 1000
    assert {r["sensor"] for r in fake.acked_records()} == {"sensor-00000", "sensor-00001", "sensor-00002"}
