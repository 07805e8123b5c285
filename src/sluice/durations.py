"""Durations as people type them: ``90s``, ``5m``, ``1h30m``, ``250ms``, ``1.5h``, or a plain
number of seconds (``90``, ``0.5``). One parser for every setting that takes a duration."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.ASCII)
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+", re.ASCII)
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+", re.ASCII)


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError saying what is accepted."""
    raw = text.strip().lower()
    if _PLAIN.fullmatch(raw):
        return float(raw)
    if not _WHOLE.fullmatch(raw):
        raise ValueError(
            f"expected a duration such as 90s, 5m, 1h30m, 250ms or plain seconds, not {text!r}"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(raw))
    if not math.isfinite(seconds):
        raise ValueError(f"duration {text!r} is too large")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``1h30m``; ``90.5`` -> ``1m30.5s``; below a second, milliseconds."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        whole = int(rest // size)
        if whole:
            out.append(f"{whole}{unit}")
            rest -= whole * size
    rest = round(rest, 3)
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)
