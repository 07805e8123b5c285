"""One client connection: handshake, pings, acks, bye, and every kind of bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from sluice.protocol import MAX_CLIENT_ID_BYTES, MAX_CONTROL_FRAME, Ack, ErrorCode, encode, encode_batch
from sluice.server.app import IngestServer
from sluice.server.connection import encode_ack
from tests.support.metrics import sample

from .conftest import StartServer
from .queues import message_ids, poll
from .rawclient import RawClient, frame, records_payload


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()


async def connect(clients: list[RawClient], server: IngestServer) -> RawClient:
    assert server.port is not None
    client = await RawClient.connect(server.port)
    clients.append(client)
    return client


async def stream_some(client: RawClient, first_seq: int, n: int = 5) -> None:
    """A well-behaved connection keeps getting its batches acked."""
    seqs = set(range(first_seq, first_seq + n))
    for seq in sorted(seqs):
        client.batch(seq, records_payload(3, start=seq * 3), count=3)
    settled = await client.settle(seqs)
    assert all(m["type"] == "ack" for m in settled.values()), settled


def test_encode_ack_matches_the_generic_encoding() -> None:
    for seq in (0, 1, 127, 128, 2**16, 2**32, 2**64 - 1):
        assert encode_ack(seq) == encode(Ack(seq))


async def test_hello_gets_welcome_with_limits(start_server: StartServer,
                                              clients: list[RawClient]) -> None:
    server = await start_server(max_frame=1 << 16, max_inflight=7)
    client = await connect(clients, server)
    welcome = await client.hello("c1")
    assert welcome == {"type": "welcome", "version": 1, "server_id": "test-server",
                       "max_frame": 1 << 16, "max_inflight": 7}


async def test_ping_echoes_any_nonce(start_server: StartServer, clients: list[RawClient]) -> None:
    server = await start_server()
    client = await connect(clients, server)
    await client.hello()
    for nonce in (None, 7, "abc", [1, {"a": b"\x00"}], 2**64 - 1):
        client.send({"type": "ping", "nonce": nonce})
        assert await client.recv() == {"type": "pong", "nonce": nonce}
    client.send({"type": "ping"})
    assert await client.recv() == {"type": "pong", "nonce": None}


async def test_batches_acked_and_queued_exactly_once(
    start_server: StartServer, clients: list[RawClient], amqp_url: str, namespace: str
) -> None:
    server = await start_server()
    client = await connect(clients, server)
    await client.hello("once")
    seqs = set(range(300))
    for seq in seqs:
        client.batch(seq, records_payload(2, start=seq * 2), count=2)
    settled = await client.settle(seqs)
    assert {m["type"] for m in settled.values()} == {"ack"}
    ids = await message_ids(amqp_url, server.topology.raw_queue("measurement"))
    assert sorted(ids) == sorted(f"once:{seq}" for seq in seqs)


async def test_bye_sends_the_owed_acks_then_closes(start_server: StartServer,
                                                   clients: list[RawClient]) -> None:
    server = await start_server()
    client = await connect(clients, server)
    await client.hello()
    for seq in range(50):
        client.batch(seq, records_payload(2))
    client.send({"type": "bye"})
    frames = await client.recv_until_closed()
    assert sorted(m["seq"] for m in frames if m["type"] == "ack") == list(range(50))
    assert len(frames) == 50


async def test_end_of_stream_still_gets_its_acks(start_server: StartServer,
                                                 clients: list[RawClient]) -> None:
    server = await start_server()
    client = await connect(clients, server)
    await client.hello()
    for seq in range(20):
        client.batch(seq, records_payload(2))
    client.writer.write_eof()  # half-close: the server owes acks, then closes
    frames = await client.recv_until_closed()
    assert sorted(m["seq"] for m in frames) == list(range(20))


async def test_seq_may_be_reused_once_settled(start_server: StartServer,
                                              clients: list[RawClient]) -> None:
    server = await start_server()
    client = await connect(clients, server)
    await client.hello()
    for _ in range(3):
        client.batch(5, records_payload(1))
        assert await client.recv() == {"type": "ack", "seq": 5}


def _hello(**fields: Any) -> bytes:
    return encode({"type": "hello", "version": 1, "client_id": "bad", **fields})


BATCH_OK = {"type": "batch", "seq": 1, "kind": "measurement", "count": 1, "payload": b"\x90"}

# name -> (bytes sent after connecting, whether a valid hello goes first, expected code)
BAD_INPUTS: dict[str, tuple[bytes, bool, str]] = {
    "oversized_header_only": ((1 << 16 + 1).to_bytes(4, "big"), True, ErrorCode.FRAME_TOO_LARGE),
    "oversized_before_hello": ((2**32 - 1).to_bytes(4, "big"), False, ErrorCode.FRAME_TOO_LARGE),
    "zero_length": (b"\x00\x00\x00\x00", True, ErrorCode.BAD_FRAME),
    "not_msgpack": (frame(b"\xc1\xc1\xc1"), True, ErrorCode.BAD_FRAME),
    "trailing_garbage": (frame(msgpack.packb({"type": "ping"}) + b"\x01"), True,
                         ErrorCode.BAD_FRAME),
    "not_a_map": (frame(msgpack.packb([1, 2, 3])), True, ErrorCode.BAD_FRAME),
    "non_string_key": (frame(msgpack.packb({1: 2})), True, ErrorCode.BAD_FRAME),
    "no_type": (encode({"seq": 1}), True, ErrorCode.BAD_MESSAGE),
    "seq_is_a_string": (encode({**BATCH_OK, "seq": "1"}), True, ErrorCode.BAD_MESSAGE),
    "negative_seq": (encode({**BATCH_OK, "seq": -1}), True, ErrorCode.BAD_MESSAGE),
    "payload_is_text": (encode({**BATCH_OK, "payload": "[]"}), True, ErrorCode.BAD_MESSAGE),
    "count_missing": (encode({k: v for k, v in BATCH_OK.items() if k != "count"}), True,
                      ErrorCode.BAD_MESSAGE),
    "bad_kind": (encode({**BATCH_OK, "kind": "Not A Kind"}), True, ErrorCode.BAD_MESSAGE),
    "unknown_type": (encode({"type": "subscribe"}), True, ErrorCode.UNEXPECTED_TYPE),
    "server_type_from_client": (encode({"type": "ack", "seq": 1}), True,
                                ErrorCode.UNEXPECTED_TYPE),
    "batch_before_hello": (encode(BATCH_OK), False, ErrorCode.UNEXPECTED_TYPE),
    "ping_before_hello": (encode({"type": "ping"}), False, ErrorCode.UNEXPECTED_TYPE),
    "second_hello": (_hello(), True, ErrorCode.UNEXPECTED_TYPE),
    "unsupported_version": (_hello(version=2), False, ErrorCode.UNSUPPORTED_VERSION),
    "version_not_int": (_hello(version="1"), False, ErrorCode.BAD_MESSAGE),
    "empty_client_id": (_hello(client_id=""), False, ErrorCode.BAD_MESSAGE),
    "client_id_too_long": (_hello(client_id="x" * 129), False, ErrorCode.BAD_MESSAGE),
    "client_id_too_many_bytes": (_hello(client_id="\u00e9" * (MAX_CLIENT_ID_BYTES // 2 + 1)),
                                 False, ErrorCode.BAD_MESSAGE),
    "ping_over_the_control_cap": (encode({"type": "ping", "nonce": "x" * MAX_CONTROL_FRAME}),
                                  True, ErrorCode.FRAME_TOO_LARGE),
    "hello_over_the_control_cap": (_hello(pad=b"x" * MAX_CONTROL_FRAME), False,
                                   ErrorCode.FRAME_TOO_LARGE),
    "seq_is_a_nested_map": (encode({**BATCH_OK, "seq": {"a": [{}]}}), True,
                            ErrorCode.BAD_MESSAGE),
    "duplicate_seq_in_flight": (encode(BATCH_OK) + encode(BATCH_OK), True,
                                ErrorCode.DUPLICATE_SEQ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_gets_its_error_frame_and_a_close(
    case: str, start_server: StartServer, clients: list[RawClient]
) -> None:
    data, hello_first, code = BAD_INPUTS[case]
    server = await start_server(max_frame=1 << 16)
    good = await connect(clients, server)
    await good.hello("good")
    await stream_some(good, 0)

    bad = await connect(clients, server)
    if hello_first:
        await bad.hello("bad")
    bad.send_raw(data)
    frames = await bad.recv_until_closed()
    errors = [m for m in frames if m["type"] == "error"]
    assert len(errors) == 1, frames
    assert frames[-1] == errors[0], "nothing may follow an error frame"
    assert errors[0]["code"] == code
    assert isinstance(errors[0]["message"], str) and errors[0]["message"]

    await stream_some(good, 100)
    assert sample(server.registry, "sluice_server_errors_total", code=code) == 1


async def test_oversized_frame_refused_while_its_body_is_still_coming(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    """The client keeps sending the body; the error arrives anyway and the stream ends."""
    server = await start_server(max_frame=1 << 16)
    client = await connect(clients, server)
    await client.hello()
    client.send_raw((1 << 20).to_bytes(4, "big") + b"\x00" * 4096)
    message = await client.recv()
    assert message is not None and message["code"] == ErrorCode.FRAME_TOO_LARGE
    assert await client.recv() is None


async def test_idle_client_is_closed(start_server: StartServer, clients: list[RawClient]) -> None:
    server = await start_server(idle_timeout=0.3)
    silent_before_hello = await connect(clients, server)
    silent_after_hello = await connect(clients, server)
    await silent_after_hello.hello()
    for client in (silent_before_hello, silent_after_hello):
        frames = await client.recv_until_closed()
        assert [m["code"] for m in frames] == [ErrorCode.IDLE_TIMEOUT]
    assert sample(server.registry, "sluice_server_errors_total", code=ErrorCode.IDLE_TIMEOUT) == 2


async def test_pings_keep_a_connection_alive(start_server: StartServer,
                                             clients: list[RawClient]) -> None:
    # 3 s: a loaded machine can stall this process for a second between two pings.
    server = await start_server(idle_timeout=3.0)
    client = await connect(clients, server)
    await client.hello()
    for i in range(35):  # 3.5 s of pings, 0.1 s apart
        await asyncio.sleep(0.1)
        client.send({"type": "ping", "nonce": i})
        assert await client.recv() == {"type": "pong", "nonce": i}
    await stream_some(client, 0)


async def test_connections_beyond_the_maximum_are_refused(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    server = await start_server(max_connections=2)
    first = await connect(clients, server)
    second = await connect(clients, server)
    await first.hello("first")
    await second.hello("second")

    third = await connect(clients, server)
    third.send({"type": "hello", "version": 1, "client_id": "third"})
    frames = await third.recv_until_closed()
    assert [m["type"] for m in frames] == ["error"]
    assert frames[0]["code"] == ErrorCode.TOO_MANY_CONNECTIONS
    assert sample(server.registry, "sluice_server_errors_total", code=ErrorCode.TOO_MANY_CONNECTIONS) == 1

    await stream_some(first, 0)
    await stream_some(second, 0)

    # a slot frees up when a connection leaves
    second.send({"type": "bye"})
    assert await second.recv_until_closed() == []
    await poll(lambda: server.connections == 1)
    fourth = await connect(clients, server)
    await fourth.hello("fourth")
    await stream_some(fourth, 0)


async def test_clients_vanishing_mid_stream_disturb_nobody(
    start_server: StartServer, clients: list[RawClient]
) -> None:
    server = await start_server()
    good = await connect(clients, server)
    await good.hello("good")
    for n in range(5):
        rude = await connect(clients, server)
        await rude.hello(f"rude-{n}")
        for seq in range(10):
            rude.batch(seq, records_payload(2))
        rude.send_raw(encode_batch(99, "measurement", 1, b"\x90" * 1000)[:500])  # half a frame
        if n % 2:
            rude.writer.transport.abort()  # a reset
        else:
            rude.writer.close()  # an end of stream inside a frame
        await stream_some(good, n * 10)
    await poll(lambda: server.connections == 1 and server.publisher.inflight == 0)
    await stream_some(good, 1000)
