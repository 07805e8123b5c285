"""Reading sluice's metrics in tests, through ``prometheus_client``'s own parser and
registry API: what a Prometheus server would read, not a regex's idea of it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["parse_metrics", "sample", "total"]


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a ``/metrics`` text as ``name{a="x",b="y"}`` -> value (labels sorted
    by name), and each labelled series' ``name`` -> its sum over the labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[_key(s.name, s.labels)] = s.value
            if s.labels:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample's value from an in-process registry; 0 for a label set not seen yet."""
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def total(registry: CollectorRegistry, name: str) -> float:
    """The sum of a sample name over all its label sets."""
    return sum(s.value for family in registry.collect() for s in family.samples if s.name == name)
