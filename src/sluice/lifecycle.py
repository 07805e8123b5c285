"""Task ownership and process lifecycle.

Nothing in sluice is fire-and-forget: every background task belongs to a
:class:`TaskOwner`, which cancels and awaits whatever is still running on ``close()``.

Every service (server, parser, API and client) has one shape, :class:`Service`: built
from its settings object, ``start()``, a graceful ``shutdown()``, an immediate ``close()``,
a ``failed`` event for a fault no retry can fix, and a ``done`` event for a service that
finishes its work by itself (the client). :func:`serve_until_signal` runs any of them
until SIGTERM or SIGINT; each command's ``main()`` is :func:`run_until_signal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any, Callable, Optional, Protocol, TypeVar

from .errors import ConfigError
from .logs import get_logger

# An optional dependency, not a cycle: ``uvloop.run`` makes a uvloop loop for one run
# instead of installing an event-loop policy (an API that Python 3.14 deprecates). uvloop
# is not built for every platform (Windows): asyncio's own loop is the fallback there.
_run_loop: Callable[[Coroutine[Any, Any, int]], int]
try:
    from uvloop import run as _run_loop
except ImportError:
    _run_loop = asyncio.run

__all__ = ["Service", "TaskOwner", "run_service", "run_until_signal", "serve_until_signal",
           "stop_on_signals", "wait_any"]

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


class Service(Protocol):
    """What every long-running service is: built from its settings object, then
    ``start()`` (its ops endpoints from :class:`sluice.ops.OpsServer` included),
    ``shutdown()`` (stop taking work, finish what is in flight, bounded by its drain
    timeout) and ``close()`` (release everything at once; safe after ``shutdown()`` and
    after a failed ``start()``). ``failed`` is set when the service cannot go on for a
    reason no retry fixes (a queue declared with other arguments, a template refused);
    the error is then in ``failure``. ``done`` is set when the service has finished by
    itself (a client whose input is all sent); the long-running services never set it."""

    @property
    def name(self) -> str:
        """Prefix of the ``<name>_stopping``/``<name>_stopped`` log events."""

    @property
    def failed(self) -> asyncio.Event: ...

    @property
    def done(self) -> asyncio.Event: ...

    @property
    def failure(self) -> Optional[BaseException]: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> dict[str, Any]:
        """Drain; returns what the ``<name>_stopped`` log line reports (e.g. ``drained``)."""

    async def close(self) -> None: ...


async def serve_until_signal(service: Service) -> int:
    """Start ``service``, run it until SIGTERM/SIGINT, its ``failed`` event or its ``done``
    event, then shut it down gracefully; the exit status: 0, 2 for a configuration fault
    (ConfigError), else 1."""
    stop = asyncio.Event()
    remove_handlers = stop_on_signals(stop)
    try:
        await service.start()
        await wait_any(stop, service.failed, service.done)
        failure = service.failure
        if failure is not None:
            log.error(f"{service.name}_cannot_start", error=str(failure))
            return 2 if isinstance(failure, ConfigError) else 1
        if not service.done.is_set():
            log.info(f"{service.name}_stopping")
        outcome = await service.shutdown()
    finally:
        remove_handlers()
        await service.close()
    log.info(f"{service.name}_stopped", **outcome)
    return 0


def run_until_signal(build: Callable[[], Service]) -> int:
    """A command's whole run: the service ``build()`` makes, served until a signal on
    uvloop when available. It is built inside the running loop, since on Python 3.9 an
    ``asyncio.Event`` binds to the loop current when it is made."""

    async def serve() -> int:
        return await serve_until_signal(build())

    return run_service(serve)
