"""How far one ``basic.ack multiple=true`` may reach on a channel."""

from __future__ import annotations

import random

from sluice.parser.acks import ChannelAcks


async def test_an_ack_never_reaches_past_a_delivery_still_in_work() -> None:
    acks = ChannelAcks()
    for tag in (1, 2, 3, 4):
        acks.received(tag)
    acks.finished(2, "m")
    acks.finished(3, "m")
    assert acks.advance() == (None, {})  # 1 is still being indexed
    acks.finished(1, "m")
    assert acks.advance() == (3, {"m": 3})
    assert len(acks) == 1
    assert acks.advance() == (None, {})
    acks.finished(4, "x")
    assert acks.advance() == (4, {"x": 1})
    assert len(acks) == 0


async def test_a_nacked_delivery_unblocks_later_acks_and_is_not_counted() -> None:
    acks = ChannelAcks()
    for tag in (1, 2, 3):
        acks.received(tag)
    acks.finished(3, "m")
    acks.finished(1, None)  # nacked on its own
    assert acks.advance() == (None, {})
    acks.finished(2, "m")
    assert acks.advance() == (3, {"m": 2})


async def test_trailing_nacks_do_not_move_the_ack_past_the_last_acked_tag() -> None:
    acks = ChannelAcks()
    for tag in (1, 2):
        acks.received(tag)
    acks.finished(1, "m")
    acks.finished(2, None)
    assert acks.advance() == (1, {"m": 1})
    assert len(acks) == 0


async def test_in_any_finishing_order_every_ack_covers_only_finished_deliveries() -> None:
    """Random finishing orders: each advance covers exactly a prefix of finished tags."""
    rng = random.Random(7)
    for _ in range(200):
        tags = list(range(1, 30))
        acks = ChannelAcks()
        for tag in tags:
            acks.received(tag)
        order = tags[:]
        rng.shuffle(order)
        finished: set[int] = set()
        covered = counted = nacked = 0
        for tag in order:
            nack = rng.random() < 0.2
            nacked += nack
            acks.finished(tag, None if nack else "m")
            finished.add(tag)
            last, acked = acks.advance()
            if last is not None:
                assert last > covered
                assert all(t in finished for t in range(1, last + 1))
                covered = last
            counted += acked.get("m", 0)
        assert len(acks) == 0
        assert counted == len(tags) - nacked
