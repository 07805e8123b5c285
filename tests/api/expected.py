"""Aggregations computed in plain Python from the documents a test indexed, to compare
with the API's answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

__all__ = ["PERCENTILE_RANK_TOLERANCE", "group_by", "matching", "percentile_window", "summary"]

Doc = dict[str, Any]

#: Elasticsearch estimates percentiles (t-digest); the test accepts any value lying
#: between the true values this many percentile ranks below and above.
PERCENTILE_RANK_TOLERANCE = 2.0


def matching(
    docs: Iterable[Doc],
    *,
    metric: Optional[str] = None,
    sensor: Optional[str] = None,
    start: Optional[int] = None,
    end: Optional[int] = None,
    tags: Sequence[tuple[str, str]] = (),
) -> list[Doc]:
    def keep(d: Doc) -> bool:
        return (
            (metric is None or d["metric"] == metric)
            and (sensor is None or d["sensor"] == sensor)
            and (start is None or d["ts"] >= start)
            and (end is None or d["ts"] < end)
            and all(d.get("tags", {}).get(k) == v for k, v in tags)
        )

    return [d for d in docs if keep(d)]


def summary(docs: Sequence[Doc]) -> dict[str, Any]:
    values = [d["value"] for d in docs]
    if not values:
        return {"count": 0, "sum": 0.0, "avg": None, "min": None, "max": None}
    # The values are dyadic fractions of moderate size: every partial sum is exact, so the
    # order Elasticsearch adds them in cannot change the result.
    total = math.fsum(values)
    assert total == sum(values)
    return {
        "count": len(values),
        "sum": total,
        "avg": total / len(values),
        "min": min(values),
        "max": max(values),
    }


def percentile_window(values: Sequence[float], percent: float,
                      tolerance: float = PERCENTILE_RANK_TOLERANCE) -> tuple[float, float]:
    """The values at ranks ``percent - tolerance`` and ``percent + tolerance``."""
    ordered = sorted(values)
    n = len(ordered)

    def at(p: float) -> float:
        p = min(100.0, max(0.0, p))
        return ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))]

    return at(percent - tolerance), at(percent + tolerance)


def group_by(docs: Iterable[Doc], key: Callable[[Doc], Any]) -> dict[Any, list[Doc]]:
    out: dict[Any, list[Doc]] = {}
    for d in docs:
        out.setdefault(key(d), []).append(d)
    return out
