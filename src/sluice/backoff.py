"""Exponential backoff with full jitter, shared by every reconnect and retry loop.

Full jitter (a uniform draw below the exponential cap) keeps many replicas that lost the
same broker from reconnecting in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays for successive attempts: ``uniform(0, min(cap, base * 2**attempt))``."""

    base: float = 0.1
    cap: float = 10.0
    floor: float = 0.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return max(self.floor, self.rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempt = 0
