"""Large buffers kept on the heap, instead of a fresh memory mapping for each one.

glibc serves an allocation at or above its mmap threshold (128 KiB, raised to the size of
the last such block freed) with a mapping of its own, and unmaps it on ``free``. So a
process that keeps making buffers of a few hundred KiB to a few MiB, as the parser does
(the body of every bulk request, the joins and copies around it), maps them afresh and
takes a page fault for every 4 KiB it writes, every time. Counted with
``getrusage``: 200 joins of 200 KB took 11,264 minor faults with glibc's defaults and 87
with the thresholds below; ``scripts/bench_parser.py`` spent 13% less CPU per record.

The price: freed heap memory is not handed back to the kernel until more than
``trim_threshold`` is free at the top, so the resident size stays near its high-water
mark. The parser's own limits (``--prefetch-bytes``, ``--bulk-max-bytes``, the bulk
concurrency) bound that mark. An operator who sets glibc's own knobs
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``, ...) is obeyed
instead: nothing is changed then.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

__all__ = ["GLIBC_KNOBS", "keep_large_buffers"]

# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's environment settings for its allocator; any of them set leaves it alone
GLIBC_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")


def keep_large_buffers(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20,
                       environ: Mapping[str, str] = os.environ) -> bool:
    """Serve allocations under ``mmap_threshold`` bytes from the heap and keep up to
    ``trim_threshold`` bytes of it once free. True when done; False when the C library
    has no ``mallopt`` (it is not glibc) or the environment sets glibc's own knobs."""
    if any(name in environ for name in GLIBC_KNOBS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # 32 MiB is glibc's largest mmap threshold on 64-bit machines; mallopt refuses more.
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
