"""Machine-wide locks for the few resources that cannot be named per run.

A Docker engine has exactly one swarm: two runs that each ``swarm init`` / deploy / ``swarm
leave`` would tear the swarm down under each other. Such tests serialise on a lock file in
``/var/lock`` with ``flock(2)``, the same lock the shell's ``flock(1)`` takes, so scripts and
tests exclude each other too::

    def test_stack(swarm_lock): ...                  # the fixture: held for the whole module

    with machine_lock("swarm"): ...                  # the same lock, in code

    flock /var/lock/sluice-swarm.lock docker stack deploy ...     # and in a shell

A swarm's ``init`` and ``leave`` also rework the engine's networks under everything running
on it: a compose project deployed while another run left its swarm lost its network's DNS
(``Temporary failure in name resolution`` for every service name, until the test gave up).
So the swarm lock is a readers-writer lock on the engine: every compose deployment holds it
*shared* (``engine_shared()``; deployments run side by side), a swarm test holds it
*exclusive* (no deployment of any run is up meanwhile).

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

__all__ = ["SWARM_LOCK", "engine_shared", "lock_path", "machine_lock"]

LOCK_DIR = os.environ.get("SLUICE_LOCK_DIR", "/var/lock")
DEFAULT_TIMEOUT = float(os.environ.get("SLUICE_LOCK_TIMEOUT", "1500"))
SWARM_LOCK = "swarm"


def lock_path(name: str) -> str:
    """``/var/lock/sluice-<name>.lock`` (``SLUICE_LOCK_DIR`` moves it)."""
    return os.path.join(LOCK_DIR, f"sluice-{name}.lock")


@contextlib.contextmanager
def machine_lock(name: str, timeout: float = DEFAULT_TIMEOUT, *, shared: bool = False) -> Iterator[None]:
    """Hold the machine-wide lock ``name`` for the block, exclusive unless ``shared``; wait
    at most ``timeout`` seconds."""
    path = lock_path(name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {timeout:.0f} s for {path}; another test run holds it "
                        f"(see `fuser -v {path}`)"
                    ) from None
                time.sleep(0.5)
        if not shared:  # who holds it, for whoever waits next
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


def engine_shared() -> contextlib.AbstractContextManager[None]:
    """Held by a compose deployment for its whole life: no swarm is made or left meanwhile."""
    return machine_lock(SWARM_LOCK, shared=True)
