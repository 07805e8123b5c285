from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Optional

import aiormq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp import frame as amqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from sluice.amqpconsumer import ConsumerChannel, ConsumerConnection, Delivered, _Url, connect
from sluice.errors import BrokerUnavailable, ConfigError

# -- the frames, walked in chunks of any size --------------------------------------------

short = st.text(max_size=20)
properties = st.fixed_dictionaries({}, optional={
    "content_type": short,
    "content_encoding": short,
    "headers": st.dictionaries(st.text(min_size=1, max_size=10),
                               st.one_of(st.integers(0, 100_000), short), max_size=4),
    "delivery_mode": st.integers(1, 2),
    "priority": st.integers(0, 9),
    "correlation_id": short,
    "reply_to": short,
    "expiration": st.integers(0, 10**6).map(str),
    "message_id": short,
    "timestamp": st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                              timezones=st.none()).map(lambda d: d.replace(microsecond=0)),
    "message_type": short,
    "app_id": short,
})
message = st.tuples(
    st.binary(max_size=3000), properties, st.booleans(), st.integers(1, 2**63 - 1),
    st.integers(1, 1200),  # the body's frame size
)


def frames_of(tag: str, body: bytes, props: dict[str, Any], redelivered: bool,
              delivery_tag: int, frame_size: int) -> bytes:
    out = [
        amqp_frame.marshal(commands.Basic.Deliver(
            consumer_tag=tag, delivery_tag=delivery_tag, redelivered=redelivered,
            exchange="ex", routing_key="rk"), 1),
        amqp_frame.marshal(ContentHeader(0, len(body), commands.Basic.Properties(**props)), 1),
    ]
    for start in range(0, len(body), frame_size):
        out.append(amqp_frame.marshal(ContentBody(body[start:start + frame_size]), 1))
    out.append(amqp_frame.marshal(Heartbeat(), 0))
    return b"".join(out)


def bare_connection() -> tuple[ConsumerConnection, ConsumerChannel]:
    """A connection with its channel open, fed by hand instead of a socket."""
    connection = ConsumerConnection(_Url("amqp://localhost/"))
    channel = ConsumerChannel(connection, 1)
    connection._channel = channel
    return connection, channel


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(message, min_size=1, max_size=8), cuts=st.lists(st.integers(1, 400)))
async def test_every_delivery_arrives_whole_however_the_stream_is_cut(
    messages: list[Any], cuts: list[int],
) -> None:
    connection, channel = bare_connection()
    got: list[Delivered] = []
    channel._consumers["c1"] = got.append
    stream = b"".join(frames_of("c1", body, props, red, tag, size)
                      for body, props, red, tag, size in messages)
    at = 0
    for cut in cuts:
        connection.data_received(stream[at:at + cut])
        at += cut
    connection.data_received(stream[at:])
    assert not connection.closing.done()
    assert [(m.body, m.delivery_tag, m.redelivered, m.message_id) for m in got] == [
        # an empty message-id is not sent at all (pamqp leaves its flag off)
        (body, tag, red, props.get("message_id") or None) for body, props, red, tag, _ in messages
    ]
    assert all(m.channel is channel and m.consumer_tag == "c1" for m in got)


@pytest.mark.parametrize(("broken", "reason"), [
    (lambda f: f[:-1] + b"\x00", "frame end byte"),
    (lambda f: b"\x05" + f[1:], "unknown frame type"),
    (lambda f: f[:3] + (1 << 20).to_bytes(4, "big") + f[7:], "over frame_max"),
])
async def test_a_broken_frame_ends_the_connection_with_a_reason(broken: Any, reason: str) -> None:
    connection, channel = bare_connection()
    got: list[Delivered] = []
    channel._consumers["c1"] = got.append
    good = frames_of("c1", b"first", {}, False, 1, 100)
    deliver = amqp_frame.marshal(commands.Basic.Deliver(
        consumer_tag="c1", delivery_tag=2, exchange="", routing_key="q"), 1)
    connection.data_received(good + broken(deliver) + good)
    assert [m.body for m in got] == [b"first"]
    assert connection.closing.done() and channel.is_closed
    with pytest.raises(BrokerUnavailable, match=reason):
        connection.closing.result()
    with pytest.raises(BrokerUnavailable):
        await channel.basic_ack(1)


async def test_a_body_without_a_delivery_ends_the_connection() -> None:
    connection, _ = bare_connection()
    connection.data_received(amqp_frame.marshal(ContentBody(b"orphan"), 1))
    with pytest.raises(BrokerUnavailable, match=r"without a basic\.deliver"):
        connection.closing.result()


async def test_a_callback_that_raises_does_not_stop_the_deliveries_behind_it() -> None:
    connection, channel = bare_connection()
    got: list[int] = []

    def on_message(message: Delivered) -> None:
        got.append(message.delivery_tag)
        if message.delivery_tag == 1:
            raise RuntimeError("a bug in the consumer")

    channel._consumers["c1"] = on_message
    connection.data_received(frames_of("c1", b"a", {}, False, 1, 10)
                             + frames_of("c1", b"b", {}, False, 2, 10))
    assert got == [1, 2] and not connection.closing.done()


async def test_a_delivery_for_a_consumer_it_does_not_have_ends_the_connection() -> None:
    """Nobody would answer it, and giving it back would only loop it: closing returns it."""
    connection, channel = bare_connection()
    channel._consumers["c1"] = lambda m: None
    connection.data_received(frames_of("c2", b"a", {}, False, 1, 10))
    with pytest.raises(BrokerUnavailable, match="consumer c2"):
        connection.closing.result()


# -- URLs ---------------------------------------------------------------------------------

def test_urls_are_read_as_aiormq_reads_them() -> None:
    url = _Url("amqps://u%40x:p%2Fw@rabbit.example/v%2Fhost?heartbeat=7&cafile=/ca.pem&name=p1")
    assert (url.tls, url.host, url.port, url.user, url.password, url.vhost, url.heartbeat,
            url.name) == (True, "rabbit.example", 5671, "u@x", "p/w", "v/host", 7, "p1")
    plain = _Url("amqp://rabbit")
    assert (plain.port, plain.user, plain.password, plain.vhost, plain.heartbeat) == (
        5672, "guest", "guest", "/", 60)
    assert _Url("amqp://rabbit:5673/").port == 5673
    assert (_Url("amqps://rabbit/?auth=external").mechanism, plain.mechanism) == (
        "EXTERNAL", "PLAIN")
    assert _Url("amqp://rabbit/?heartbeat=30.0").heartbeat == 30


@pytest.mark.parametrize(("url", "message"), [
    ("http://rabbit/", "not an AMQP URL"),
    ("amqp://rabbit/?auth=amqplain", "plain or external"),
    ("amqp://rabbit/?heartbeat=soon", "heartbeat in the AMQP URL is not a number"),
    ("amqp://rabbit/?heartbeat=-1", "0 to 65535"),
])
def test_urls_it_cannot_use_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _Url(url)


def test_tls_files_that_cannot_be_loaded_are_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="TLS files named in the AMQP URL"):
        _Url(f"amqps://rabbit/?cafile={tmp_path}/missing.pem").ssl_context()


# -- against RabbitMQ ---------------------------------------------------------------------

async def _declare(amqp_url: str, queue: str, bodies: list[bytes]) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, auto_delete=False)
        for n, body in enumerate(bodies):
            await channel.basic_publish(body, routing_key=queue, properties=aiormq.spec.Basic.Properties(
                message_id=f"m{n}", headers={"h": "x" * n}))
    finally:
        await connection.close()


async def _depth(amqp_url: str, queue: str, delete: bool = False) -> int:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        if delete:
            await channel.queue_delete(queue)
        assert ok.message_count is not None
        return ok.message_count
    finally:
        await connection.close()


async def _wait(check: Any, what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_consume_ack_and_nack_against_rabbitmq(amqp_url: str, namespace: str) -> None:
    """Within a window of 4, every message arrives with its id; acked ones leave the
    queue, a nacked one comes back redelivered; closing requeues the unacked."""
    queue = f"{namespace}.lean"
    bodies = [bytes([n]) * (n * 50_000) for n in range(10)]  # bodies of several frames
    await _declare(amqp_url, queue, bodies)
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=4)
        got: list[Delivered] = []
        tag = await channel.basic_consume(queue, got.append)
        await _wait(lambda: len(got) == 4, "the first window")
        await asyncio.sleep(0.3)
        assert len(got) == 4  # the window holds
        await channel.basic_ack(got[1].delivery_tag, multiple=True)
        await channel.basic_nack(got[2].delivery_tag, requeue=True)
        await _wait(lambda: len(got) == 7, "three more")
        assert [m.message_id for m in got[:4]] == ["m0", "m1", "m2", "m3"]
        assert [m.body for m in got[:4]] == bodies[:4]
        back = [m for m in got[4:] if m.message_id == "m2"]
        assert back and back[0].redelivered and back[0].body == bodies[2]
        await channel.basic_cancel(tag)
        assert not channel.is_closed
    finally:
        await connection.close()
    assert connection.closing.done()
    assert await _depth(amqp_url, queue, delete=True) == 8  # two acked, the rest requeued


async def test_a_deleted_queue_ends_the_connection(amqp_url: str, namespace: str) -> None:
    queue = f"{namespace}.gone"
    await _declare(amqp_url, queue, [])
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.basic_consume(queue, lambda m: None)
        await _depth(amqp_url, queue, delete=True)
        await asyncio.wait_for(asyncio.wait([connection.closing]), 20)
        with pytest.raises(BrokerUnavailable, match="cancelled consumer"):
            connection.closing.result()
    finally:
        await connection.close()


async def test_consuming_a_missing_queue_is_the_brokers_reason(amqp_url: str) -> None:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        with pytest.raises(BrokerUnavailable, match="404 NOT_FOUND"):
            await channel.basic_consume("sluice-no-such-queue", lambda m: None)
        assert channel.is_closed
    finally:
        await connection.close()


async def test_a_request_cancelled_unanswered_ends_the_connection(
    amqp_url: str, namespace: str,
) -> None:
    """RabbitMQ makes the consumer anyway: left open, the connection would hold a consumer
    nobody registered, and take its consume-ok for the next request's answer."""
    queue = f"{namespace}.cancelled"
    await _declare(amqp_url, queue, [b"x"])
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        consume = asyncio.ensure_future(channel.basic_consume(queue, lambda m: None))
        await asyncio.sleep(0)  # the request is written; its answer is not in yet
        consume.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consume
        assert connection.closing.done()
        with pytest.raises(BrokerUnavailable, match=r"Basic\.Consume was cancelled unanswered"):
            connection.closing.result()
    finally:
        await connection.close()
    await _wait_depth(amqp_url, queue, 1)


async def _wait_depth(amqp_url: str, queue: str, depth: int) -> None:
    for _ in range(100):
        if await _depth(amqp_url, queue) == depth:
            break
        await asyncio.sleep(0.1)
    assert await _depth(amqp_url, queue, delete=True) == depth


async def test_wrong_credentials_are_the_brokers_reason(amqp_url: str) -> None:
    host = amqp_url.split("@")[-1]
    with pytest.raises(BrokerUnavailable, match="403 ACCESS_REFUSED"):
        await connect(f"amqp://guest:wrong@{host}")


async def test_heartbeats_keep_an_idle_connection_open(amqp_url: str) -> None:
    """With a 1 s heartbeat RabbitMQ closes a connection that sends nothing for 2 s;
    this one stays open for 4 s of silence from its owner."""
    separator = "&" if "?" in amqp_url else "?"
    connection = await connect(f"{amqp_url}{separator}heartbeat=1")
    try:
        channel = await connection.channel()
        await asyncio.sleep(4)
        assert not connection.closing.done()
        await channel.basic_qos(prefetch_count=1)  # and it still answers
    finally:
        await connection.close()


async def test_an_unreachable_broker_is_a_connection_error() -> None:
    from tests.support.rabbitmq import free_port

    failure: Optional[BaseException] = None
    try:
        await connect(f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    except OSError as exc:
        failure = exc
    assert isinstance(failure, ConnectionRefusedError)
