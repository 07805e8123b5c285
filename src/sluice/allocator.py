"""Freed memory kept for the next large buffer, not returned to the kernel and faulted in again.

glibc returns the free top of its heap to the kernel (``brk``) as soon as more than its trim
threshold is free there, and that threshold is small (128 KiB by default, then twice the
mmap threshold, which follows the size of the large blocks freed). A process that keeps
making and freeing buffers of a few hundred KiB to a few MiB, as the parser does (the body
of every bulk request, the joins and copies around it), so shrinks and grows its heap for
each one, and takes a page fault for every 4 KiB it writes, every time. Counted with
``getrusage``: 200 joins of 200 KB took 11,264 minor faults (and 605 ``brk`` calls) with
glibc's defaults, and 87 with the thresholds below; ``scripts/bench_parser.py`` spent 13%
less CPU per record. Both thresholds are set: setting either alone also turns off glibc's
moving mmap threshold, and blocks of that size are then mapped, and faulted in, afresh.

The price: up to ``trim_threshold`` of freed heap stays mapped, so the resident size stays
near its high-water mark. The parser's own limits (``--prefetch-bytes``,
``--bulk-max-bytes``, the bulk concurrency) bound that mark. An operator who sets glibc's
own thresholds (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_``, or the same ``glibc.malloc.*`` tunables in ``GLIBC_TUNABLES``) is
obeyed instead: nothing is changed then, so any of them also turns this off.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

__all__ = ["GLIBC_KNOBS", "GLIBC_TUNABLE_KNOBS", "keep_large_buffers"]

# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's environment settings for these thresholds; any of them set leaves it alone
GLIBC_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_")
#: the same, as tunables in ``GLIBC_TUNABLES`` (``glibc.malloc.trim_threshold=...``)
GLIBC_TUNABLE_KNOBS = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
                       "glibc.malloc.top_pad", "glibc.malloc.mmap_max")


def keep_large_buffers(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20,
                       environ: Mapping[str, str] = os.environ) -> bool:
    """Serve allocations under ``mmap_threshold`` bytes from the heap and keep up to
    ``trim_threshold`` bytes of it once free. True when done; False when the C library
    has no ``mallopt`` (it is not glibc) or the environment sets these thresholds itself."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in environ for name in GLIBC_KNOBS) or any(
        knob in tunables for knob in GLIBC_TUNABLE_KNOBS
    ):
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
