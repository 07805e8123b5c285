"""The latency histogram against exact nearest-rank percentiles of known samples."""

from __future__ import annotations

import random

import pytest

from sluice.client.histogram import SUB_BITS, LatencyHistogram
from sluice.client.report import percentile

FRACTIONS = (0.0, 0.001, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0)
#: the documented bound: a reported value is at most this much above the true one
RELATIVE_ERROR = 2.0 ** -(SUB_BITS - 1)


def _samples(kind: str, n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    if kind == "lognormal":  # ack latencies: a body around milliseconds, a long tail
        return [int(rng.lognormvariate(8.0, 1.2)) for _ in range(n)]
    if kind == "uniform":
        return [rng.randrange(0, 5_000_000) for _ in range(n)]
    if kind == "bimodal":  # fast acks and the ones that waited for a reconnect
        return [rng.randrange(200, 2_000) if rng.random() < 0.98 else rng.randrange(2_000_000, 9_000_000)
                for _ in range(n)]
    return [rng.randrange(0, 1 << SUB_BITS) for _ in range(n)]  # small: every value exact


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "small"])
@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_within_the_documented_error(kind: str, seed: int) -> None:
    """Each percentile is the exact one, or above it by at most 2**-(SUB_BITS-1)."""
    samples = _samples(kind, 50_000, seed)
    hist = LatencyHistogram()
    for value in samples:
        hist.record(value)
    for fraction in FRACTIONS:
        exact = percentile([float(v) for v in samples], fraction)
        got = hist.value_at(fraction)
        assert exact <= got <= exact * (1 + RELATIVE_ERROR), (kind, fraction, exact, got)
        if kind == "small":
            assert got == exact
    assert hist.max == max(samples) and hist.min == min(samples)
    assert hist.value_at(1.0) == max(samples)
    assert hist.count == len(samples)


def test_memory_depends_on_the_range_not_the_count() -> None:
    """A million samples from 1 µs to an hour fit in a bounded number of buckets."""
    hist = LatencyHistogram()
    rng = random.Random(3)
    for _ in range(1_000_000 // 50):
        for _ in range(50):
            hist.record(int(10 ** rng.uniform(0, 9.556)))  # up to 3.6e9 µs = 1 h
    assert hist.count == 1_000_000
    powers_of_two = (3_600_000_000).bit_length()
    assert hist.buckets <= (1 << SUB_BITS) + (powers_of_two - SUB_BITS + 1) * (1 << (SUB_BITS - 1))


def test_empty_and_seconds() -> None:
    hist = LatencyHistogram()
    assert hist.value_at(0.99) == 0
    hist.record_seconds(0.0125)
    hist.record_seconds(-1.0)  # a clock step backwards counts as 0, not as an error
    assert (hist.min, hist.max, hist.count) == (0, 12_500, 2)
    assert hist.percentiles_ms({"p50": 0.5, "max": 1.0}) == {"p50": 0.0, "max": 12.5}
