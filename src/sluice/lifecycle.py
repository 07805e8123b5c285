"""Task ownership and process lifecycle.

Nothing in sluice is fire-and-forget: every background task belongs to a
:class:`TaskOwner`, which cancels and awaits whatever is still running on ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, Callable, TypeVar

from .logs import get_logger

# ``uvloop.run`` makes a uvloop loop for one run instead of installing an event-loop policy
# (an API that Python 3.14 deprecates). uvloop is not built for every platform (Windows):
# asyncio's own loop is the fallback there.
_run_loop: Callable[[Coroutine[Any, Any, int]], int]
try:
    from uvloop import run as _run_loop
except ImportError:
    _run_loop = asyncio.run

__all__ = ["TaskOwner", "run_service", "stop_on_signals", "wait_any"]

T = TypeVar("T")
log = get_logger(__name__)


class TaskOwner:
    """Owns tasks; a task that fails is logged, and ``close()`` cancels the rest."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is closed")
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task_failed", owner=self._name, task=task.get_name(), error=repr(exc),
                      exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        self._closed = True
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        while pending:
            _, pending = await asyncio.wait(pending, timeout=1.0)
            for task in pending:
                # The cancellation was swallowed on its way (asyncio.wait_for can lose one
                # that races the inner future finishing, and libraries that wrap errors
                # around connects do too): send it again until the task ends.
                task.cancel()
        self._tasks.clear()


def stop_on_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM or SIGINT; returns a function removing the handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


async def wait_any(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set (a stop signal, or a fatal failure)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def run_service(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a service's main coroutine on uvloop when available; returns its exit status."""
    return _run_loop(main())
