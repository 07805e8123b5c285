"""The run-unique names and machine-wide locks that concurrent test runs rely on."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Iterator

import pytest

from .locks import lock_path, machine_lock
from .names import unique_name


def test_names_stay_unique_when_random_is_reseeded_identically() -> None:
    """pytest-randomly seeds ``random`` the same way in runs sharing a seed; names must not
    follow it, or two concurrent runs would create the same queues and projects."""
    random.seed(1234)
    first = [unique_name("t") for _ in range(100)]
    random.seed(1234)
    second = [unique_name("t") for _ in range(100)]
    assert len(set(first) | set(second)) == 200
    assert all(n.startswith("t") and len(n) == 13 and n.isalnum() and n.islower() for n in first)


@pytest.mark.parametrize("prefix", ["", "Sluice", "sluice-e2e", "1abc", "a_b"])
def test_a_prefix_that_is_not_a_valid_name_everywhere_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="name prefix"):
        unique_name(prefix)


@contextlib.contextmanager
def held_elsewhere(path: str, *flock_options: str) -> Iterator[None]:
    """``flock(1)`` in another process holds ``path`` for the block, then lets go."""
    holder = subprocess.Popen(["flock", *flock_options, path, "sh", "-c", "echo held; read line"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with holder:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            yield
            assert holder.stdin is not None
            holder.stdin.write("done\n")
            holder.stdin.close()
            assert holder.wait(30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)


def test_a_lock_held_by_another_process_is_waited_for_then_taken() -> None:
    """The lock is flock(2) on /var/lock/sluice-NAME.lock: the shell's flock(1) excludes it."""
    name = unique_name("testlock")
    path = lock_path(name)
    try:
        with held_elsewhere(path), pytest.raises(TimeoutError, match=path), \
                machine_lock(name, timeout=0.5):
            pass
        with machine_lock(name, timeout=30), open(path) as f:
            assert f.read().strip() == str(os.getpid())
    finally:
        os.unlink(path)


def test_shared_holders_exclude_an_exclusive_one_and_not_each_other() -> None:
    """Compose deployments (shared) run side by side; a swarm (exclusive) waits for them,
    and they wait for it."""
    name = unique_name("testlock")
    path = lock_path(name)
    try:
        with held_elsewhere(path, "--shared"):
            with machine_lock(name, timeout=5, shared=True):
                pass
            with pytest.raises(TimeoutError, match=path), machine_lock(name, timeout=0.5):
                pass
        with machine_lock(name, timeout=30):
            probe = subprocess.run(["flock", "--shared", "--nonblock", path, "true"])
            assert probe.returncode != 0, "a shared holder got in beside an exclusive one"
    finally:
        os.unlink(path)
