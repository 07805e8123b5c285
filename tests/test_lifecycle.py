from __future__ import annotations

import asyncio

from sluice.lifecycle import TaskOwner


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
