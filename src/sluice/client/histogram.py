"""A latency histogram in bounded memory, after HdrHistogram's log-linear buckets.

Values are whole microseconds. Below ``2**SUB_BITS`` each value has its own bucket; above,
each power of two is split into ``2**(SUB_BITS - 1)`` equal buckets, so a reported value is
at most ``2**-(SUB_BITS - 1)`` (about 0.1 %) above the true one, at any magnitude. Memory
grows with the range of values seen (about 1,000 buckets per power of two, at most ~23,000
buckets from 1 µs to an hour), never with the number of samples: a client can record every
ack of a days-long run. The exact minimum and maximum are kept as well.
"""

from __future__ import annotations

import math

__all__ = ["SUB_BITS", "LatencyHistogram"]

SUB_BITS = 11
_HALF = 1 << (SUB_BITS - 1)


def _index(value: int) -> int:
    shift = value.bit_length() - SUB_BITS
    if shift <= 0:
        return value
    return shift * _HALF + (value >> shift)


def _highest(index: int) -> int:
    """The largest value that falls in bucket ``index``."""
    if index < (1 << SUB_BITS):
        return index
    shift, top = divmod(index - (1 << SUB_BITS), _HALF)
    shift += 1
    top += _HALF
    return ((top + 1) << shift) - 1


class LatencyHistogram:
    """Counts of microsecond values; percentiles by nearest rank, like HdrHistogram."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        """Count one value (negative values count as 0)."""
        value = max(0, int(value))
        index = _index(value)
        self._counts[index] = self._counts.get(index, 0) + 1
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += 1
        self.total += value

    def record_seconds(self, seconds: float) -> None:
        self.record(round(seconds * 1_000_000))

    @property
    def buckets(self) -> int:
        """Buckets in use: the memory this histogram holds."""
        return len(self._counts)

    def value_at(self, fraction: float) -> int:
        """The value at or below which ``fraction`` of the samples lie (0 with none)."""
        if self.count == 0:
            return 0
        rank = min(self.count, max(1, math.ceil(fraction * self.count)))
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                return max(self.min, min(_highest(index), self.max))
        return self.max

    def percentiles_ms(self, fractions: dict[str, float]) -> dict[str, float]:
        """``{"p50": 0.5, ...}`` -> ``{"p50": milliseconds, ...}`` in one pass."""
        return {name: round(self.value_at(f) / 1000, 3) for name, f in fractions.items()}
