"""Large buffers kept on the heap: counted in page faults, the kernel's own figure."""

from __future__ import annotations

import os
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
    if not sys.platform.startswith("linux"):
        pytest.fail("this test needs Linux with glibc: the setting is glibc's mallopt")
    _, default = faults("default")
    kept, after = faults("keep")
    assert kept == "True", "mallopt is missing: is the C library glibc?"
    # 200 joins of 49 pages each: glibc's defaults map and fault every one of them again.
    assert default > 200 * 40
    assert after < default / 10


@pytest.mark.parametrize("knob", ["MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"])
def test_an_operators_glibc_settings_are_left_alone(knob: str) -> None:
    assert keep_large_buffers(environ={knob: "1"}) is False
