"""A small Prometheus registry: counters, gauges and histograms with labels, rendered
in the text exposition format (version 0.0.4).

Kept in-tree because the hot paths bump counters per batch, and a dict increment is all
that costs.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Union

__all__ = ["Counter", "Gauge", "Histogram", "Registry"]

LabelKey = tuple[str, ...]
Number = Union[int, float]

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: LabelKey, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.label_names = labels

    def _key(self, labels: tuple[str, ...]) -> LabelKey:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {labels}")
        return labels

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        super().__init__(name, help, labels)
        self._values: dict[LabelKey, Number] = {} if labels else {(): 0}

    def inc(self, amount: Number = 1, *labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0) + amount

    def value(self, *labels: str) -> Number:
        return self._values.get(self._key(labels), 0)

    def total(self) -> Number:
        return sum(self._values.values())

    def render(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in sorted(self._values.items())]


class Gauge(_Metric):
    """A value that is set, or read from a callback at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], Number] | None = None) -> None:
        super().__init__(name, help)
        self._value: Number = 0
        self._read = read

    def set(self, value: Number) -> None:
        self._value = value

    def inc(self, amount: Number = 1) -> None:
        self._value += amount

    def dec(self, amount: Number = 1) -> None:
        self._value -= amount

    def value(self) -> Number:
        return self._read() if self._read is not None else self._value

    def render(self) -> list[str]:
        return [f"{self.name} {_fmt(self.value())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        super().__init__(name, help)
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> list[str]:
        lines = []
        running = 0
        for bound, n in zip((*self._bounds, math.inf), self._counts):
            running += n
            lines.append(f'{self.name}_bucket{{le="{_fmt(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_fmt(self._sum)}")
        lines.append(f"{self.name}_count {self._count}")
        return lines


class Registry:
    """Holds a service's metrics; ``render()`` is what ``/metrics`` serves."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        metric = Counter(f"{self._namespace}_{name}", help, labels)
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, read: Callable[[], Number] | None = None) -> Gauge:
        metric = Gauge(f"{self._namespace}_{name}", help, read)
        self._add(metric)
        return metric

    def histogram(self, name: str, help: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> Histogram:
        metric = Histogram(f"{self._namespace}_{name}", help, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.header())
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
