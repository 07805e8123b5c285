"""Record time: epoch milliseconds, their text form, and the bounds of a date field.

Every sluice time is an integer of Unix epoch milliseconds in UTC. This module is the one
home of the conversions and constants that the parser, the index naming and the API share.
"""

from __future__ import annotations

import time

__all__ = ["MAX_TS", "MS_PER_DAY", "iso_utc_ms", "second_text"]

#: 9999-12-31T23:59:59.999Z, the last instant an Elasticsearch date field holds.
MAX_TS = 253_402_300_799_999
MS_PER_DAY = 86_400_000


def second_text(second: int) -> str:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SS`` (UTC, no fraction, no zone)."""
    t = time.gmtime(second)
    # Formatted by hand: strftime's %Y does not zero-pad years below 1000 on every libc.
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def iso_utc_ms(millis: int) -> str:
    """``1700000000123`` -> ``"2023-11-14T22:13:20.123Z"``."""
    second, ms = divmod(millis, 1000)
    return f"{second_text(second)}.{ms:03d}Z"
