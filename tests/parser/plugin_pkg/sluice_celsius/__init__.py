"""A sluice parser plugin: converts Fahrenheit measurements to Celsius."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.errors import ConfigError, RecordError


class CelsiusParser:
    name = "celsius"
    kinds = frozenset({"*"})  # a transform: runs after the parser that made the document

    def __init__(self, options: Mapping[str, str]) -> None:
        if set(options) - {"digits"}:
            raise ConfigError(f"celsius takes only the option digits, not {sorted(options)}")
        self.digits = int(options.get("digits", "2"))

    def parse(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(record, Mapping):
            raise RecordError("not_a_map", "a record must be a map")
        doc = dict(record)  # never modify the input
        if doc.get("unit") == "F":
            value = doc.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError("bad_value", "value must be a number")
            doc["value"] = round((value - 32) * 5 / 9, self.digits)
            doc["unit"] = "C"
        return doc

    def example(self) -> dict[str, Any]:
        return {"id": "a1", "sensor": "oven-1", "metric": "temp", "value": 212.0, "unit": "F"}
