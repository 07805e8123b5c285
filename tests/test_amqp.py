from __future__ import annotations

import asyncio
from typing import Callable

import pytest

from sluice.amqp import BrokerLink
from sluice.errors import BrokerUnavailable, ConfigError
from tests.support.rabbitmq import PrivateBroker, free_port, wait_link_up


async def test_link_reports_loss_and_reconnects_after_a_broker_restart(
    private_rabbitmq: PrivateBroker,
) -> None:
    lost: list[BaseException] = []
    link = BrokerLink(private_rabbitmq.url, on_lost=lost.append)
    link.start()
    try:
        assert await wait_link_up(link, 30)
        await asyncio.to_thread(private_rabbitmq.stop_app)
        for _ in range(100):
            if not link.is_up:
                break
            await asyncio.sleep(0.1)
        assert not link.is_up and lost
        with pytest.raises(BrokerUnavailable):
            link.channel  # noqa: B018 - the property is the behaviour under test
        await asyncio.to_thread(private_rabbitmq.start_app)
        assert await wait_link_up(link, 60)
        assert link.connects == 2
        await link.channel.basic_publish(b"x", routing_key="nowhere")
    finally:
        await link.close()


def test_a_link_without_urls_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one RabbitMQ URL"):
        BrokerLink(" , ")


async def test_link_fails_over_to_the_next_node_of_its_list(
    private_rabbitmq: PrivateBroker, amqp_url: str
) -> None:
    """Given two nodes, a link whose node stops reconnects to the other one at once, without
    waiting for the first to come back; a dead URL in the list is skipped."""
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    link = BrokerLink([dead, private_rabbitmq.url, amqp_url])
    link.start()
    try:
        assert await wait_link_up(link, 30)
        for _ in range(10):  # wherever the random start put it, move it onto the private node
            if link.url == private_rabbitmq.url:
                break
            await link._drop()
            await _wait_until(lambda: link.is_up, 30)
        assert link.url == private_rabbitmq.url, link.url
        connects = link.connects
        await asyncio.to_thread(private_rabbitmq.stop_app)
        await _wait_until(lambda: link.connects > connects and link.is_up, 60)
        assert link.url == amqp_url
        await link.channel.basic_publish(b"x", routing_key="nowhere")
    finally:
        await link.close()
        await asyncio.to_thread(private_rabbitmq.start_app)


async def _wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
