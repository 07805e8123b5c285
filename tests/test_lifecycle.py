from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, Optional

import pytest

from sluice.errors import ConfigError, IndexingError
from sluice.lifecycle import TaskOwner, serve_until_signal


async def test_close_ends_a_task_that_swallowed_its_cancellation() -> None:
    """A cancellation lost on its way (as asyncio.wait_for can lose one that races the inner
    future, or a library that wraps errors around a connect) is sent again: close() ends."""
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # the first one is lost, like inside a reconnect loop

    owner = TaskOwner("test")
    task = owner.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(owner.close(), 30)
    assert swallowed.is_set() and task.cancelled()
    assert len(owner) == 0


class _Service:
    """A service that records what the runner asked of it, in order."""

    name = "fake"

    def __init__(self, failure: Optional[BaseException] = None, *, finishes: bool = False) -> None:
        self.calls: list[str] = []
        self.failed = asyncio.Event()
        self.done = asyncio.Event()
        self.started = asyncio.Event()
        self._failure = failure
        self._finishes = finishes

    @property
    def failure(self) -> Optional[BaseException]:
        return self._failure

    async def start(self) -> None:
        self.calls.append("start")
        self.started.set()
        if self._failure is not None:
            self.failed.set()
        if self._finishes:
            asyncio.get_running_loop().call_later(0.05, self.done.set)

    async def shutdown(self) -> dict[str, Any]:
        self.calls.append("shutdown")
        return {"drained": True}

    async def close(self) -> None:
        self.calls.append("close")


async def test_a_signal_shuts_the_service_down_then_closes_it() -> None:
    service = _Service()
    runner = asyncio.ensure_future(serve_until_signal(service))
    await asyncio.wait_for(service.started.wait(), 30)
    os.kill(os.getpid(), signal.SIGTERM)  # the runner's handler takes it, not pytest
    assert await asyncio.wait_for(runner, 30) == 0
    assert service.calls == ["start", "shutdown", "close"]


@pytest.mark.parametrize(("failure", "status"), [
    (ConfigError("queue declared with other arguments"), 2),
    (IndexingError("template refused"), 1),
])
async def test_a_service_that_fails_for_good_is_closed_with_its_exit_status(
    failure: BaseException, status: int
) -> None:
    service = _Service(failure)
    assert await asyncio.wait_for(serve_until_signal(service), 30) == status
    assert service.calls == ["start", "close"]  # no drain: it never ran


async def test_a_service_that_finishes_by_itself_is_shut_down_without_a_signal() -> None:
    # The client's shape: its input ends, and it drains and closes like a stopped service.
    service = _Service(finishes=True)
    assert await asyncio.wait_for(serve_until_signal(service), 30) == 0
    assert service.calls == ["start", "shutdown", "close"]
