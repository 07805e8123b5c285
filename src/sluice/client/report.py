"""What the client counts, its progress reports and the final summary.

Counters are plain attributes bumped once per batch (never per record), so counting costs
nothing next to the I/O. Every count is in records, not batches. Ack latency goes into a
bounded-memory histogram over the whole run (:mod:`.histogram`).

Progress: on a terminal, one status line rewritten in place; otherwise (a container's log,
a pipe) one line every ``--report-interval`` on stderr, plain text or, with ``--json``, a
JSON object per line, so that ``docker logs`` shows a run that has not ended yet.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, TextIO

from .histogram import LatencyHistogram

__all__ = [
    "EXIT_INVALID_INPUT",
    "EXIT_NOT_ACKED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_SOURCE_ERROR",
    "Stats",
    "Summary",
    "exit_status",
    "percentile",
    "progress_loop",
    "progress_snapshot",
    "render_text",
    "report_loop",
]

EXIT_OK = 0
#: some record was never acked (given up after --max-tries, or unsent at stop)
EXIT_NOT_ACKED = 1
#: every valid record was acked, but some input lines were rejected and not sent
EXIT_INVALID_INPUT = 3
#: the input source failed (an unreadable file, a read error): the input was not all sent
EXIT_SOURCE_ERROR = 4
#: the server refused this client for good: TLS verification or authentication failed
EXIT_REFUSED = 5

#: line numbers of rejected input kept for the summary (the log has every one)
MAX_INVALID_LINES = 100
#: the latency percentiles of the summary, as HdrHistogram and most load tools report them
PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99_9": 0.999}


class Stats:
    """Running counts shared by the source and every stream of one client."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.produced = 0  # records made or read, valid ones only
        self.sent = 0      # records sent at least once
        self.resent = 0    # records sent again (after a nack or a lost connection)
        self.acked = 0
        self.nacked = 0    # records in nacked batches, per nack
        self.gave_up = 0   # records in batches given up after --max-tries or too large
        self.inflight = 0  # records sent and not yet acked or nacked
        self.invalid = 0   # input lines rejected in file mode
        self.invalid_lines: list[int] = []
        self.reconnects = 0
        self.source_error: Optional[str] = None  # why the source stopped before its input ended
        self.fatal_error: Optional[str] = None   # TLS or authentication failure: not retried
        self.payload_bytes = 0  # msgpack bytes of the records made (batch payloads)
        # from a batch's last send to its ack, every batch of the run, in bounded memory
        self.latency = LatencyHistogram()

    def reject_line(self, line: int) -> None:
        self.invalid += 1
        if len(self.invalid_lines) < MAX_INVALID_LINES:
            self.invalid_lines.append(line)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0.0 for none)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Summary:
    target: str
    connections: int
    produced: int
    sent: int
    acked: int
    nacked: int
    resent: int
    failed: int
    invalid: int
    elapsed: float
    records_per_s: float
    ack_latency_p50_ms: float
    ack_latency_p99_ms: float
    reconnects: int
    ack_latency_p90_ms: float = 0.0
    ack_latency_p99_9_ms: float = 0.0
    ack_latency_max_ms: float = 0.0
    acked_batches: int = 0
    record_bytes: float = 0.0
    seed: Optional[int] = None
    invalid_lines: list[int] = field(default_factory=list)
    source_error: Optional[str] = None
    fatal_error: Optional[str] = None

    @classmethod
    def of(cls, stats: Stats, target: str, connections: int, seed: Optional[int]) -> Summary:
        elapsed = stats.elapsed()
        pct = stats.latency.percentiles_ms(PERCENTILES)
        return cls(
            target=target, connections=connections, produced=stats.produced, sent=stats.sent,
            acked=stats.acked, nacked=stats.nacked, resent=stats.resent,
            # Whatever was made and not acked failed, whether given up, never sent or cut off.
            failed=stats.produced - stats.acked, invalid=stats.invalid,
            elapsed=round(elapsed, 3),
            records_per_s=round(stats.acked / elapsed, 1) if elapsed > 0 else 0.0,
            ack_latency_p50_ms=pct["p50"], ack_latency_p99_ms=pct["p99"],
            ack_latency_p90_ms=pct["p90"], ack_latency_p99_9_ms=pct["p99_9"],
            ack_latency_max_ms=round(stats.latency.max / 1000, 3),
            acked_batches=stats.latency.count,
            record_bytes=round(stats.payload_bytes / stats.produced, 1) if stats.produced else 0.0,
            reconnects=stats.reconnects, seed=seed, invalid_lines=list(stats.invalid_lines),
            source_error=stats.source_error, fatal_error=stats.fatal_error,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def exit_status(summary: Summary) -> int:
    if summary.fatal_error is not None:
        return EXIT_REFUSED
    if summary.source_error is not None:
        return EXIT_SOURCE_ERROR
    if summary.failed > 0:
        return EXIT_NOT_ACKED
    if summary.invalid > 0:
        return EXIT_INVALID_INPUT
    return EXIT_OK


def render_text(summary: Summary) -> str:
    lines = [
        f"target        {summary.target} ({summary.connections} connection(s))",
        f"sent          {summary.sent}",
        f"acked         {summary.acked}",
        f"nacked        {summary.nacked}",
        f"resent        {summary.resent}",
        f"failed        {summary.failed}",
        f"elapsed       {summary.elapsed:.3f} s",
        f"records/s     {summary.records_per_s:.1f}",
        f"record size   {summary.record_bytes:.0f} bytes (msgpack, average)",
        f"reconnects    {summary.reconnects}",
        f"ack latency   p50 {summary.ack_latency_p50_ms:.1f} ms, p90 {summary.ack_latency_p90_ms:.1f} ms, "
        f"p99 {summary.ack_latency_p99_ms:.1f} ms, p99.9 {summary.ack_latency_p99_9_ms:.1f} ms, "
        f"max {summary.ack_latency_max_ms:.1f} ms ({summary.acked_batches} batches, whole run)",
    ]
    if summary.invalid:
        shown = ", ".join(map(str, summary.invalid_lines))
        more = " ..." if summary.invalid > len(summary.invalid_lines) else ""
        lines.append(f"invalid lines {summary.invalid} (not sent): {shown}{more}")
    if summary.seed is not None:
        lines.append(f"seed          {summary.seed}")
    if summary.source_error is not None:
        lines.append(f"source error  {summary.source_error} (input not read to its end)")
    if summary.fatal_error is not None:
        lines.append(f"refused       {summary.fatal_error} (not retried)")
    return "\n".join(lines)


async def progress_loop(stats: Stats, out: TextIO = sys.stderr, interval: float = 0.5) -> None:
    """Rewrite one status line on a terminal until cancelled, then clear it."""
    last_acked, last_at = stats.acked, time.monotonic()
    try:
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rate = (stats.acked - last_acked) / (now - last_at) if now > last_at else 0.0
            last_acked, last_at = stats.acked, now
            out.write(
                f"\r{rate:>10.0f} rec/s  acked {stats.acked}  in flight {stats.inflight}  "
                f"resent {stats.resent}  failed {stats.gave_up}\x1b[K"
            )
            out.flush()
    finally:
        out.write("\r\x1b[K")
        out.flush()


def progress_snapshot(stats: Stats, rate: float) -> dict[str, Any]:
    """What one periodic report says; ``rate`` is acked records/s since the last one."""
    return {
        "event": "progress", "elapsed": round(stats.elapsed(), 1), "rate": round(rate, 1),
        "acked": stats.acked, "in_flight": stats.inflight, "nacked": stats.nacked,
        "resent": stats.resent, "reconnects": stats.reconnects, "failed": stats.gave_up,
        "ack_latency_p99_ms": stats.latency.percentiles_ms({"p99": 0.99})["p99"],
    }


def _text_line(snap: dict[str, Any]) -> str:
    return (
        f"[{snap['elapsed']:>7.1f}s] {snap['rate']:>9.0f} rec/s  acked {snap['acked']}  "
        f"in flight {snap['in_flight']}  nacked {snap['nacked']}  resent {snap['resent']}  "
        f"reconnects {snap['reconnects']}  failed {snap['failed']}  "
        f"p99 {snap['ack_latency_p99_ms']:.1f} ms\n"
    )


async def report_loop(stats: Stats, out: TextIO = sys.stderr, interval: float = 5.0,
                      as_json: bool = False) -> None:
    """One progress line every ``interval`` seconds until cancelled (not on a terminal)."""
    last_acked, last_at = stats.acked, time.monotonic()
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic()
        rate = (stats.acked - last_acked) / (now - last_at) if now > last_at else 0.0
        last_acked, last_at = stats.acked, now
        snap = progress_snapshot(stats, rate)
        out.write(json.dumps(snap) + "\n" if as_json else _text_line(snap))
        out.flush()
