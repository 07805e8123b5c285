from __future__ import annotations

import random

from sluice.backoff import Backoff


def test_delays_grow_exponentially_up_to_the_cap_with_jitter() -> None:
    b = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.1 * 2**i) for i in range(12)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays), "jitter makes every delay different"
    b.reset()
    assert b.next_delay() <= 0.1
