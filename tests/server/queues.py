"""Reading back what the server published."""

from __future__ import annotations

import asyncio
from typing import Any

from ..support.rabbitmq import drain_queue

__all__ = ["drain_queue", "message_ids", "poll"]


async def message_ids(url: str, queue: str) -> list[str]:
    return [str(m.header.properties.message_id) for m in await drain_queue(url, queue)]


async def poll(condition: Any, timeout: float = 30, interval: float = 0.02) -> None:
    """Wait until ``condition()`` is true (a readiness poll, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(interval)
