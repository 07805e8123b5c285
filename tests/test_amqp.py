from __future__ import annotations

import asyncio

import pytest

from sluice.amqp import BrokerLink
from sluice.errors import BrokerUnavailable
from tests.support.rabbitmq import PrivateBroker


async def test_link_reports_loss_and_reconnects_after_a_broker_restart(
    private_rabbitmq: PrivateBroker,
) -> None:
    lost: list[BaseException] = []
    link = BrokerLink(private_rabbitmq.url, on_lost=lost.append)
    link.start()
    try:
        assert await link.wait_up(30)
        await asyncio.to_thread(private_rabbitmq.stop_app)
        for _ in range(100):
            if not link.is_up:
                break
            await asyncio.sleep(0.1)
        assert not link.is_up and lost
        with pytest.raises(BrokerUnavailable):
            link.channel  # noqa: B018 - the property is the behaviour under test
        await asyncio.to_thread(private_rabbitmq.start_app)
        assert await link.wait_up(60)
        assert link.connects == 2
        await link.channel.basic_publish(b"x", routing_key="nowhere")
    finally:
        await link.close()
