"""What the benchmark scripts share: the import path, free ports, the stand-in endpoint's
server loop, and the broker chores around a run.

Each ``scripts/bench_*.py`` imports this module from its own directory; importing it puts
``src`` and the repository root on ``sys.path``, so that ``sluice`` and ``tests.support``
(where the broker helpers the tests use live) import from the checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import aiormq  # noqa: E402
from aiohttp import web  # noqa: E402
from tests.support.rabbitmq import delete_topology, free_port  # noqa: E402

__all__ = ["ROOT", "delete_topology", "free_port", "queue_depth", "read_text", "serve"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def read_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def serve(handle: Handler, announce: Callable[[int], dict[str, Any]]) -> None:
    """Serve ``handle`` for every path on a free local port until SIGTERM; first print
    ``announce(port)`` as one JSON line, which the benchmark that started this reads."""

    async def main() -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(json.dumps(announce(runner.addresses[0][1])), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())


async def queue_depth(url: str, queue: str) -> int:
    """How many messages ``queue`` holds (a passive declare: a missing queue is an error)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()
