"""Property-based tests of wire protocol v1 framing (sluice.protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Coroutine
from typing import Any, Callable, TypeVar

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.client.settings import ClientSettings
from sluice.errors import ConfigError, ProtocolError
from sluice.es import index_name
from sluice.parser.settings import ParserSettings
from sluice.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    Ack,
    Batch,
    Bye,
    ErrorCode,
    ErrorFrame,
    Hello,
    Nack,
    Ping,
    Pong,
    Welcome,
    decode_body,
    encode,
    encode_batch,
    parse_client,
    parse_server,
    read_frame,
)
from sluice.server.settings import ServerSettings
from tests.support.frames import FrameDecoder

T = TypeVar("T")

uints = st.integers(min_value=0, max_value=2**64 - 1)
kinds = st.from_regex(r"[a-z0-9][a-z0-9_]{0,63}", fullmatch=True).filter(lambda k: k != "dead")
texts = st.text(max_size=200)
client_ids = st.text(min_size=1, max_size=128).filter(lambda c: len(c.encode("utf-8")) <= 128)
# msgpack values that survive a round trip unchanged (no tuples, no non-str map keys)
nonces = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=10,
)

client_messages = st.one_of(
    st.builds(Hello, client_id=client_ids),
    st.builds(Batch, seq=uints, kind=kinds, count=uints, payload=st.binary(max_size=300)),
    st.builds(Ping, nonce=nonces),
    st.just(Bye()),
)
server_messages = st.one_of(
    st.builds(Welcome, server_id=texts, max_frame=uints, max_inflight=uints),
    st.builds(Ack, seq=uints),
    st.builds(Nack, seq=uints, code=texts, message=texts),
    st.builds(Pong, nonce=nonces),
    st.builds(ErrorFrame, code=texts, message=texts),
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a private loop: unlike asyncio.run this leaves the current loop setting (and
    so pytest-asyncio's loops) alone."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def error_code(parse: Callable[[Any], Any], message: Any) -> str | None:
    """The code of the ProtocolError ``parse(message)`` raises, or None if it parses."""
    try:
        parse(message)
    except ProtocolError as exc:
        return exc.code
    return None


def decode_all(data: bytes, max_frame: int = 1 << 20) -> list[dict[str, Any]]:
    decoder = FrameDecoder(max_frame)
    frames = decoder.feed(data)
    assert decoder.buffered == 0
    return frames


@given(client_messages)
def test_client_messages_round_trip(message: Any) -> None:
    (decoded,) = decode_all(encode(message))
    assert parse_client(decoded) == message


@given(server_messages)
def test_server_messages_round_trip(message: Any) -> None:
    (decoded,) = decode_all(encode(message))
    assert parse_server(decoded) == message


@given(seq=uints, kind=kinds, count=uints, payload=st.binary(max_size=2000))
def test_encode_batch_is_the_generic_encoding(seq: int, kind: str, count: int,
                                              payload: bytes) -> None:
    fast = encode_batch(seq, kind, count, payload)
    assert decode_all(fast) == decode_all(encode(Batch(seq, kind, count, payload)))
    assert parse_client(decode_all(fast)[0]) == Batch(seq, kind, count, payload)


@given(st.lists(st.one_of(client_messages, server_messages), max_size=8), st.data())
def test_stream_cut_anywhere_decodes_the_same(messages: list[Any], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder(1 << 20)
    frames: list[dict[str, Any]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert frames == [decode_body(encode(m)[HEADER_SIZE:]) for m in messages]
    assert decoder.buffered == 0


@given(st.binary(max_size=2000), st.integers(1, 4096))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes, max_frame: int) -> None:
    decoder = FrameDecoder(max_frame)
    messages: list[dict[str, Any]] = []
    code = error_code(lambda d: messages.extend(decoder.feed(d)), data)
    assert code in {None, ErrorCode.BAD_FRAME, ErrorCode.BAD_MESSAGE, ErrorCode.FRAME_TOO_LARGE}
    for message in messages:
        for parse in (parse_client, parse_server):
            with contextlib.suppress(ProtocolError):
                parse(message)


@given(st.binary(max_size=500))
def test_arbitrary_bodies_raise_only_protocol_error(body: bytes) -> None:
    try:
        message = decode_body(body)
    except ProtocolError:
        return
    for parse in (parse_client, parse_server):
        with contextlib.suppress(ProtocolError):
            parse(message)


@given(st.dictionaries(st.text(max_size=10), nonces, max_size=6),
       st.sampled_from(["hello", "batch", "ping", "bye", "ack", "nack", "welcome", "pong",
                        "error", "other"]))
def test_maps_with_arbitrary_fields_raise_only_protocol_error(fields: dict[str, Any],
                                                              kind: str) -> None:
    message = decode_all(encode({**fields, "type": kind}))[0]
    for parse in (parse_client, parse_server):
        assert error_code(parse, message) in {None, ErrorCode.BAD_MESSAGE,
                                              ErrorCode.UNEXPECTED_TYPE,
                                              ErrorCode.UNSUPPORTED_VERSION}


@given(max_frame=st.integers(1, 1 << 20), excess=st.integers(1, 1 << 20))
def test_over_limit_length_is_refused_from_the_header_alone(max_frame: int, excess: int) -> None:
    decoder = FrameDecoder(max_frame)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(struct.pack(">I", max_frame + excess))
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(max_frame=st.integers(1, 1 << 16), excess=st.integers(1, 1 << 16))
def test_read_frame_refuses_before_the_body_arrives(max_frame: int, excess: int) -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack(">I", max_frame + excess))  # no body, no EOF: a
        with pytest.raises(ProtocolError) as info:                # read would block forever
            await asyncio.wait_for(read_frame(reader, max_frame), 5)
        assert info.value.code == ErrorCode.FRAME_TOO_LARGE

    run(scenario())


@settings(deadline=None)
@given(st.lists(client_messages, max_size=5), st.binary(max_size=3))
def test_read_frame_reads_a_stream(messages: list[Any], tail: bytes) -> None:
    async def scenario() -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(encode(m) for m in messages) + tail)
        reader.feed_eof()
        out = []
        failure: ProtocolError | None = None
        while True:
            try:
                body = await read_frame(reader, 1 << 20)
            except ProtocolError as exc:
                failure = exc
                break
            if body is None:
                break
            out.append(parse_client(decode_body(body)))
        # a partial trailing header ends the stream badly; a clean end is None
        assert (failure is not None) == bool(tail)
        assert failure is None or failure.code == ErrorCode.BAD_FRAME
        return out

    assert run(scenario()) == messages


def test_zero_length_frame_is_bad() -> None:
    with pytest.raises(ProtocolError) as info:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert info.value.code == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(("body", "code"), [
    (b"\xc1", ErrorCode.BAD_FRAME),                                   # never-used msgpack byte
    (msgpack.packb([1, 2]), ErrorCode.BAD_FRAME),                     # not a map
    (msgpack.packb({1: "x"}), ErrorCode.BAD_FRAME),                   # non-string key
    (msgpack.packb({"a": 1}), ErrorCode.BAD_MESSAGE),                 # no type
    (msgpack.packb({"type": 7}), ErrorCode.BAD_MESSAGE),              # type not a string
    (msgpack.packb({"type": "hello"}) + b"\x00", ErrorCode.BAD_FRAME),  # trailing bytes
])
def test_bad_bodies(body: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_body(body)
    assert info.value.code == code


@pytest.mark.parametrize(("message", "code"), [
    ({"type": "hello", "version": 2, "client_id": "c"}, ErrorCode.UNSUPPORTED_VERSION),
    ({"type": "hello", "version": 1, "client_id": ""}, ErrorCode.BAD_MESSAGE),
    ({"type": "hello", "version": 1, "client_id": "x" * 129}, ErrorCode.BAD_MESSAGE),
    ({"type": "hello", "version": 1, "client_id": "\u00e9" * 65}, ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "a.b", "count": 1, "payload": b""}, ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "a-b", "count": 1, "payload": b""}, ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "_a", "count": 1, "payload": b""}, ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "dead", "count": 1, "payload": b""}, ErrorCode.BAD_MESSAGE),
    ({"type": "hello", "version": "1", "client_id": "c"}, ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": -1, "kind": "k", "count": 1, "payload": b""},
     ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "K!", "count": 1, "payload": b""},
     ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "k", "count": True, "payload": b""},
     ErrorCode.BAD_MESSAGE),
    ({"type": "batch", "seq": 1, "kind": "k", "count": 1, "payload": "text"},
     ErrorCode.BAD_MESSAGE),
    ({"type": "ack", "seq": 1}, ErrorCode.UNEXPECTED_TYPE),
    ({"type": "nonsense"}, ErrorCode.UNEXPECTED_TYPE),
])
def test_bad_client_messages(message: dict[str, Any], code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client(message)
    assert info.value.code == code


@pytest.mark.parametrize("kind", ["measurement", "a", "k_2", "a.b", "a-b", "_a", "Bad", "dead", "x" * 65, ""])
def test_server_parser_client_and_wire_agree_on_every_kind(kind: str) -> None:
    """One rule: a kind the server would accept is one a parser can consume and index."""
    def accepted(build: Any) -> bool:
        try:
            build()
        except (ConfigError, ValueError, ProtocolError):
            return False
        return True

    verdicts = {
        "wire": accepted(lambda: parse_client({"type": "batch", "seq": 1, "kind": kind, "count": 0,
                                               "payload": b""})),
        "server": accepted(lambda: ServerSettings(kinds=(kind,))),
        "parser": accepted(lambda: ParserSettings(kinds=(kind,))),
        "client": accepted(lambda: ClientSettings(kind=kind, file="records.ndjson")),
    }
    assert len(set(verdicts.values())) == 1, verdicts
    if verdicts["wire"]:
        assert index_name("sluice", kind, 0).startswith(f"sluice-{kind}-")


_NESTED_PROBE = """
import resource, sys
from sluice.protocol import decode_body, parse_client
count = int(sys.argv[1])
head = b"\\x86\\xa4type\\xa5batch\\xa3seq\\x01\\xa4kind\\xa1k\\xa5count\\x00\\xa7payload\\xc4\\x00"
body = head + b"\\xa5extra\\xdd" + count.to_bytes(4, "big") + b"\\x80" * count
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
message = decode_body(body)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert "extra" not in message and parse_client(message).seq == 1, message
print((after - before) * 1024, len(body))
"""


def test_unknown_keys_are_skipped_without_building_their_values() -> None:
    """4 MiB of nested empty maps under an unknown key would be four million dicts (about
    300 MB, measured with msgpack.unpackb); skipped unread, decoding costs about the
    frame's own size. Measured as peak RSS in a fresh interpreter (tracemalloc misses
    msgpack's dicts)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _NESTED_PROBE, str(DEFAULT_MAX_FRAME - 64)],
                         capture_output=True, text=True, check=True).stdout
    grew, size = map(int, out.split())
    assert grew < 4 * size, f"decoding a {size}-byte frame grew the peak RSS by {grew} bytes"


def test_a_map_where_a_scalar_belongs_is_not_built() -> None:
    body = msgpack.packb({"type": "batch", "seq": {"a": [{}] * 5}, "kind": "k", "count": 0,
                          "payload": b""})
    with pytest.raises(ProtocolError) as info:
        parse_client(decode_body(body))
    assert info.value.code == ErrorCode.BAD_MESSAGE
    assert "seq" in info.value.message


def test_a_small_pings_nested_nonce_is_echoed() -> None:
    nonce = {"a": [1, {"b": None}]}
    assert parse_client(decode_body(msgpack.packb({"type": "ping", "nonce": nonce}))) == Ping(nonce)
