from __future__ import annotations

import io
import json
import typing

from sluice.client.report import (
    EXIT_INVALID_INPUT,
    EXIT_NOT_ACKED,
    EXIT_OK,
    EXIT_SOURCE_ERROR,
    Stats,
    Summary,
    exit_status,
    percentile,
    render_text,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(reversed(values), 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.99) == 3.0


def _summary(produced: int, acked: int, invalid: int = 0) -> Summary:
    stats = Stats()
    stats.produced, stats.acked, stats.sent = produced, acked, produced
    for line in range(invalid):
        stats.reject_line(line + 1)
    for seconds in (0.001, 0.002, 0.010):
        stats.latency.record_seconds(seconds)
    return Summary.of(stats, "h:1", 2, seed=7)


def test_failed_is_everything_made_and_not_acked() -> None:
    summary = _summary(produced=1000, acked=900)
    assert summary.failed == 100
    assert exit_status(summary) == EXIT_NOT_ACKED


def test_exit_status_ok_and_invalid_input() -> None:
    assert exit_status(_summary(10, 10)) == EXIT_OK
    assert exit_status(_summary(10, 10, invalid=2)) == EXIT_INVALID_INPUT
    # not acked wins over invalid input: it is the worse news
    assert exit_status(_summary(10, 9, invalid=2)) == EXIT_NOT_ACKED


def test_json_summary_has_every_documented_field() -> None:
    data = json.loads(_summary(10, 10).to_json())
    for key in ("sent", "acked", "nacked", "resent", "failed", "elapsed", "records_per_s",
                "ack_latency_p50_ms", "ack_latency_p99_ms", "invalid", "seed"):
        assert key in data
    assert data["ack_latency_p50_ms"] == 2.0
    assert data["ack_latency_p99_ms"] == 10.0


def test_text_summary_lists_invalid_lines() -> None:
    text = render_text(_summary(10, 10, invalid=3))
    assert "acked         10" in text
    assert "invalid lines 3 (not sent): 1, 2, 3" in text


async def test_progress_line_clears_itself() -> None:
    import asyncio

    from sluice.client.report import progress_loop

    class Terminal(io.StringIO):
        wrote = asyncio.Event()

        def write(self, text: str) -> int:
            if "acked" in text:
                self.wrote.set()
            return super().write(text)

    out = Terminal()
    stats = Stats()
    stats.acked = 5
    task = asyncio.ensure_future(progress_loop(stats, out, interval=0.01))
    await asyncio.wait_for(out.wrote.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert "acked 5" in out.getvalue()
    assert out.getvalue().endswith("\r\x1b[K")


def test_summary_type_hints_resolve_on_every_supported_python() -> None:
    hints = typing.get_type_hints(Summary)
    assert hints["seed"] == typing.Optional[int]
    assert hints["source_error"] == typing.Optional[str]


def test_a_source_error_wins_the_exit_status() -> None:
    stats = Stats()
    stats.produced, stats.acked = 10, 10
    stats.source_error = "OSError: [Errno 5] Input/output error"
    summary = Summary.of(stats, "h:1", 1, seed=None)
    assert exit_status(summary) == EXIT_SOURCE_ERROR
    assert json.loads(summary.to_json())["source_error"] == stats.source_error
