"""What the client counts, the live progress line and the final summary.

Counters are plain attributes bumped once per batch (never per record), so counting costs
nothing next to the I/O. Every count is in records, not batches.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, TextIO

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
    "render_text",
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
MAX_LATENCIES = 200_000


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
        # seconds from a batch's last send to its ack; the most recent ones, so that a client
        # streaming for days does not grow without bound
        self.latencies: deque[float] = deque(maxlen=MAX_LATENCIES)

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
    seed: Optional[int] = None
    invalid_lines: list[int] = field(default_factory=list)
    source_error: Optional[str] = None
    fatal_error: Optional[str] = None

    @classmethod
    def of(cls, stats: Stats, target: str, connections: int, seed: Optional[int]) -> Summary:
        elapsed = stats.elapsed()
        return cls(
            target=target, connections=connections, produced=stats.produced, sent=stats.sent,
            acked=stats.acked, nacked=stats.nacked, resent=stats.resent,
            # Whatever was made and not acked failed, whether given up, never sent or cut off.
            failed=stats.produced - stats.acked, invalid=stats.invalid,
            elapsed=round(elapsed, 3),
            records_per_s=round(stats.acked / elapsed, 1) if elapsed > 0 else 0.0,
            ack_latency_p50_ms=round(percentile(stats.latencies, 0.50) * 1000, 3),
            ack_latency_p99_ms=round(percentile(stats.latencies, 0.99) * 1000, 3),
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
        f"ack latency   p50 {summary.ack_latency_p50_ms:.1f} ms, p99 {summary.ack_latency_p99_ms:.1f} ms",
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
