"""Machine-wide locks for the few resources that cannot be named per run.

A Docker engine has exactly one swarm: two runs that each ``swarm init`` / deploy / ``swarm
leave`` would tear the swarm down under each other. Such tests serialise on a lock file in
``/var/lock`` with ``flock(2)``, the same lock the shell's ``flock(1)`` takes, so scripts and
tests exclude each other too::

    def test_stack(swarm_lock): ...                  # the fixture: held for the whole module

    with machine_lock("swarm"): ...                  # the same lock, in code

    flock /var/lock/sluice-swarm.lock docker stack deploy ...     # and in a shell

The kernel drops a flock when its holder dies, so a killed run never leaves the lock taken.
Waiting has a deadline (``SLUICE_LOCK_TIMEOUT`` seconds, default 1500), after which the test
fails saying which lock it waited for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

import pytest

__all__ = ["SWARM_LOCK", "lock_path", "machine_lock"]

LOCK_DIR = os.environ.get("SLUICE_LOCK_DIR", "/var/lock")
DEFAULT_TIMEOUT = float(os.environ.get("SLUICE_LOCK_TIMEOUT", "1500"))
SWARM_LOCK = "swarm"


def lock_path(name: str) -> str:
    """``/var/lock/sluice-<name>.lock`` (``SLUICE_LOCK_DIR`` moves it)."""
    return os.path.join(LOCK_DIR, f"sluice-{name}.lock")


@contextlib.contextmanager
def machine_lock(name: str, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the machine-wide lock ``name`` for the block; wait at most ``timeout`` seconds."""
    path = lock_path(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {timeout:.0f} s for {path}; another test run holds it "
                        f"(see `fuser -v {path}`)"
                    ) from None
                time.sleep(0.5)
        # Who holds it, for whoever waits next.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def swarm_lock() -> Iterator[None]:
    """The machine's single swarm is this module's until its last test ends."""
    with machine_lock(SWARM_LOCK):
        yield
