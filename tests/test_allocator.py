"""Large buffers kept on the heap: counted in page faults, the kernel's own figure."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sluice.allocator import GLIBC_KNOBS, keep_large_buffers

# Joins of 200 KB, made and freed 200 times: the minor page faults they cost, in a
# process of their own (an allocator setting is for the life of the process).
_COUNT_FAULTS = """
import resource, sys
from sluice.allocator import keep_large_buffers
kept = keep_large_buffers() if sys.argv[1] == "keep" else False
parts = [b"x" * 100] * 2000
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    b"".join(parts)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in GLIBC_KNOBS}
    out = subprocess.run([sys.executable, "-c", _COUNT_FAULTS, mode], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


def test_large_buffers_stop_costing_a_page_fault_per_page() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.fail("this test needs Linux with glibc (Debian, Ubuntu, Fedora): the setting "
                    f"is glibc's mallopt, and this C library is {platform.libc_ver()}")
    _, default = faults("default")
    kept, after = faults("keep")
    assert kept == "True", "glibc's mallopt refused the thresholds"
    # 200 joins of 49 pages each: with glibc's defaults the heap's top is handed back after
    # each one, and all of its pages are faulted in again for the next.
    assert default > 200 * 40
    assert after < default / 10


@pytest.mark.parametrize("environ", [
    {"MALLOC_TRIM_THRESHOLD_": "131072"},
    {"MALLOC_MMAP_THRESHOLD_": "131072"},
    {"GLIBC_TUNABLES": "glibc.malloc.check=0:glibc.malloc.trim_threshold=131072"},
], ids=["trim", "mmap", "tunable"])
def test_an_operators_own_thresholds_are_left_alone(environ: dict[str, str]) -> None:
    assert keep_large_buffers(environ=environ) is False


def test_unrelated_allocator_settings_do_not_turn_it_off() -> None:
    """Container images often cap the arenas; that says nothing about these thresholds."""
    environ = {"MALLOC_ARENA_MAX": "2", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert keep_large_buffers(environ=environ) is True
