from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sluice.client import runner
from sluice.client.batch import OutBatch
from sluice.client.feed import Feed
from sluice.client.report import EXIT_SOURCE_ERROR, Stats, exit_status, render_text
from sluice.client.runner import run
from sluice.client.settings import ClientSettings
from sluice.client.sources import MeasurementGenerator
from sluice.errors import ConfigError

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


async def test_the_client_stops_producing_while_its_unacked_window_is_full(fake: FakeServer) -> None:
    # Backpressure: the server reads every batch but acks none. The client may hold its
    # window on each connection (max_inflight - 1 batches), the feed's few batches and the
    # one the source is putting; past that the generator must wait, not pile up records.
    fake.hold_acks = True
    fake.max_inflight = 6
    port = await fake.start()
    settings = ClientSettings(target=f"127.0.0.1:{port}", connections=2, batch_size=10, seed=1,
                              instance_id="runner-test", drain_timeout=0.1)
    stop = asyncio.Event()
    task = asyncio.ensure_future(run(settings, stop=stop, progress=False))
    for _ in range(10_000):
        if len(fake.seen) >= 2 * 5:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.3)
    stop.set()
    summary = await asyncio.wait_for(task, 30)
    assert len(fake.seen) == 2 * 5
    bound = (2 * 5 + 4 * 2 + 1) * settings.batch_size
    assert 0 < summary.produced <= bound
    assert summary.acked == 0
    assert summary.failed == summary.produced


class _BrokenSource:
    """Hands over two batches, then its input fails."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    async def run(self, feed: Feed, stop: asyncio.Event) -> None:
        gen = MeasurementGenerator(1, "broken", 3)
        for _ in range(2):
            self._stats.produced += 10
            await feed.put(OutBatch("measurement", 10, gen.payload(10, 1_700_000_000_000)))
        raise OSError(5, "Input/output error")


async def test_a_failing_source_is_reported_and_exits_non_zero(
    fake: FakeServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = await fake.start()
    monkeypatch.setattr(runner, "build_source", lambda settings, stats: (_BrokenSource(stats), None))
    settings = ClientSettings(target=f"127.0.0.1:{port}", instance_id="runner-test")
    summary = await asyncio.wait_for(run(settings, progress=False), 30)
    assert summary.source_error is not None and "Input/output error" in summary.source_error
    assert summary.acked == 20  # what was read before the failure still goes out
    assert exit_status(summary) == EXIT_SOURCE_ERROR
    assert "source error" in render_text(summary)


def test_build_source_opens_the_file_up_front(tmp_path: Path) -> None:
    for path, words in ((tmp_path / "missing.ndjson", "cannot be read"), (tmp_path, "directory")):
        settings = ClientSettings(file=str(path), instance_id="runner-test")
        with pytest.raises(ConfigError, match=words):
            runner.build_source(settings, Stats())
