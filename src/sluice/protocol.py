"""Wire protocol v1: length-prefixed msgpack frames between clients and servers.

A frame is a 4-byte unsigned big-endian length ``L`` (1..max_frame) followed by ``L`` bytes
holding one msgpack map with string keys and a ``"type"``. ``docs/protocol.md`` is the
normative description; this module is its implementation for both directions.

Everything that can go wrong with bytes from a peer raises :class:`ProtocolError` with one
of the codes below, and nothing else.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import msgpack

from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FRAME_KEYS",
    "HEADER",
    "HEADER_SIZE",
    "KIND_PATTERN",
    "KIND_RULE",
    "MAX_CLIENT_ID_BYTES",
    "MAX_CONTROL_FRAME",
    "MAX_TOKEN_CHARS",
    "PROTOCOL_VERSION",
    "Ack",
    "Batch",
    "Bye",
    "ClientMessage",
    "ErrorCode",
    "ErrorFrame",
    "Hello",
    "Nack",
    "NackCode",
    "NestedValue",
    "Ping",
    "Pong",
    "ServerMessage",
    "Welcome",
    "check_length",
    "decode_body",
    "encode",
    "encode_batch",
    "parse_client",
    "parse_server",
    "read_body",
    "read_frame",
    "read_header",
    "validate_kind",
]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
#: A record kind names a routing key (``raw.<kind>``), a queue (``<ns>.raw.<kind>``) and the
#: daily indices ``<prefix>-<kind>-YYYY.MM.DD``. "-" and "." are kept out so that index
#: patterns ``<prefix>-<kind>-*`` and topic bindings can never match another kind's.
KIND_PATTERN = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
KIND_RULE = "1 to 64 of a-z, 0-9 and '_', starting with a letter or digit, not 'dead'"
#: The kind of the dead-letter event indices ``<prefix>-dead-*``; no record kind may use it.
RESERVED_KIND = "dead"
#: hello.client_id, in UTF-8 bytes: ``<client_id>:<seq>`` (seq up to 20 digits) must fit
#: AMQP's 255-byte message_id.
MAX_CLIENT_ID_BYTES = 128
MAX_UINT64 = 2**64 - 1
#: the largest frame of any type but ``batch`` (hello, ping, bye): they carry a few short
#: fields, so anything bigger is an attack or a bug, refused before it costs memory
MAX_CONTROL_FRAME = 8 * 1024
#: the keys a frame may carry; any other key is skipped unread (msgpack's skip builds no
#: objects), so unknown keys cost nothing however much they hold
FRAME_KEYS = frozenset({
    "type", "version", "client_id", "token", "seq", "kind", "count", "payload", "nonce",
    "server_id", "max_frame", "max_inflight", "code", "message",
})
#: the one key whose value may be a map or an array (an opaque nonce echoed by pong); it
#: is only decoded in a frame no bigger than MAX_CONTROL_FRAME, so it cannot expand much
_NESTED_KEYS = frozenset({"nonce"})


class ErrorCode:
    """Codes carried by ``error`` frames (the connection closes after them)."""

    FRAME_TOO_LARGE = "frame_too_large"
    BAD_FRAME = "bad_frame"
    BAD_MESSAGE = "bad_message"
    UNEXPECTED_TYPE = "unexpected_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    IDLE_TIMEOUT = "idle_timeout"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SHUTTING_DOWN = "shutting_down"
    DUPLICATE_SEQ = "duplicate_seq"
    #: the server requires authentication and hello's token is missing, unknown or revoked
    AUTH_FAILED = "auth_failed"


#: longest hello.token accepted (tokens from ``sluice token`` have 43 characters)
MAX_TOKEN_CHARS = 512


class NackCode:
    """Codes carried by ``nack`` frames (the connection stays open; the client resends)."""

    UNROUTABLE = "unroutable"    # no queue is bound for the batch's kind
    REFUSED = "refused"          # the broker refused the batch (e.g. a full queue)
    UNAVAILABLE = "unavailable"  # the broker link is down or went down before the confirm
    FORBIDDEN = "forbidden"      # the authenticated client may not send batches of this kind


def validate_kind(kind: str) -> str:
    """``kind`` if it is a valid record kind, else ValueError saying the rule."""
    if not KIND_PATTERN.fullmatch(kind) or kind == RESERVED_KIND:
        raise ValueError(f"invalid record kind {kind!r}: {KIND_RULE}")
    return kind


# -- messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    client_id: str
    version: int = PROTOCOL_VERSION
    #: optional credential (protocol revision 1.1); a v1 server without auth ignores it
    token: Optional[str] = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "hello", "version": self.version, "client_id": self.client_id}
        if self.token is not None:
            out["token"] = self.token
        return out


@dataclass(frozen=True)
class Batch:
    seq: int
    kind: str
    count: int
    payload: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"type": "batch", "seq": self.seq, "kind": self.kind, "count": self.count,
                "payload": self.payload}


@dataclass(frozen=True)
class Ping:
    nonce: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "ping", "nonce": self.nonce}


@dataclass(frozen=True)
class Bye:
    def to_dict(self) -> dict[str, Any]:
        return {"type": "bye"}


@dataclass(frozen=True)
class Welcome:
    server_id: str
    max_frame: int
    max_inflight: int
    version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"type": "welcome", "version": self.version, "server_id": self.server_id,
                "max_frame": self.max_frame, "max_inflight": self.max_inflight}


@dataclass(frozen=True)
class Ack:
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "ack", "seq": self.seq}


@dataclass(frozen=True)
class Nack:
    seq: int
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "nack", "seq": self.seq, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Pong:
    nonce: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": "pong", "nonce": self.nonce}


@dataclass(frozen=True)
class ErrorFrame:
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


ClientMessage = Union[Hello, Batch, Ping, Bye]
ServerMessage = Union[Welcome, Ack, Nack, Pong, ErrorFrame]
Message = Union[ClientMessage, ServerMessage]


# -- encoding ---------------------------------------------------------------------------

_packer_default = msgpack.Packer(use_bin_type=True)


def encode(message: Message | Mapping[str, Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One whole frame (length prefix included) for a message or a plain map."""
    body: bytes = msgpack.packb(
        message.to_dict() if not isinstance(message, Mapping) else dict(message), use_bin_type=True
    )
    if len(body) > max_frame:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {len(body)} bytes exceeds {max_frame}")
    return HEADER.pack(len(body)) + body


def encode_batch(seq: int, kind: str, count: int, payload: bytes) -> bytes:
    """The batch frame, built without an intermediate dict: this is the client's hot path."""
    body = b"".join((
        b"\x85\xa4type\xa5batch\xa3seq", _packer_default.pack(seq),
        b"\xa4kind", _packer_default.pack(kind),
        b"\xa5count", _packer_default.pack(count),
        b"\xa7payload", _packer_default.pack(payload),
    ))
    return HEADER.pack(len(body)) + body


# -- decoding ---------------------------------------------------------------------------


class NestedValue:
    """Stands for a map or array that was skipped unread where a scalar belongs, so that
    validation names the field ("must be an integer, not NestedValue")."""


_NESTED = NestedValue()
# msgpack type bytes: fixstr, str8/16/32; fixmap, fixarray, array16/32, map16/32
_STR_MARKERS = frozenset([*range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB])
_NESTED_MARKERS = frozenset([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])


def decode_body(body: bytes) -> dict[str, Any]:
    """A frame body as a map with string keys and a string ``type``.

    Only :data:`FRAME_KEYS` are decoded; other keys are skipped without building their
    values, and a map or array where a scalar belongs is not built either. So the memory a
    frame costs is its own size, not what its msgpack could expand to (a 4 MiB frame of
    nested empty maps would otherwise become hundreds of MB of dicts).
    """
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(body) or 1)
    try:
        unpacker.feed(body)
        entries = unpacker.read_map_header()
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame body is not one msgpack map") from exc
    obj: dict[str, Any] = {}
    small = len(body) <= MAX_CONTROL_FRAME
    try:
        for _ in range(entries):
            if body[unpacker.tell()] not in _STR_MARKERS:
                raise ProtocolError(ErrorCode.BAD_FRAME, "map keys must be strings")
            key = unpacker.unpack()
            if key not in FRAME_KEYS:
                unpacker.skip()
            elif body[unpacker.tell()] in _NESTED_MARKERS and not (small and key in _NESTED_KEYS):
                unpacker.skip()
                obj[key] = _NESTED
            else:
                obj[key] = unpacker.unpack()
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame body is not one msgpack value: {exc!r}") from exc
    if unpacker.tell() != len(body):
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame body has bytes after its map")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, 'message has no string "type"')
    return obj


def check_length(length: int, max_frame: int) -> None:
    """Refuse a frame length from its header alone: 0 is bad, over ``max_frame`` too large."""
    if length == 0:
        raise ProtocolError(ErrorCode.BAD_FRAME, "frame length is 0")
    if length > max_frame:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {length} bytes exceeds the limit of {max_frame}")


async def read_header(reader: asyncio.StreamReader, max_frame: int) -> int | None:
    """The next frame's body length, or None on a clean end of stream between frames."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError(ErrorCode.BAD_FRAME, "stream ended inside a frame header") from exc
    (length,) = HEADER.unpack(header)
    check_length(length, max_frame)
    return int(length)


async def read_body(reader: asyncio.StreamReader, length: int) -> bytes:
    """The ``length`` bytes of a frame body whose header was read."""
    try:
        body: bytes = await reader.readexactly(length)
        return body
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(ErrorCode.BAD_FRAME, "stream ended inside a frame body") from exc


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> bytes | None:
    """The next frame body from a stream, or None on a clean end of stream between frames."""
    length = await read_header(reader, max_frame)
    if length is None:
        return None
    return await read_body(reader, length)


# -- validation -------------------------------------------------------------------------


def _field(msg: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in msg:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f'{msg["type"]} needs "{name}" ({what})')
    value = msg[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f'{msg["type"]}.{name} must be {what}, not {type(value).__name__}'
        )
    return value


def _uint(msg: Mapping[str, Any], name: str) -> int:
    value: int = _field(msg, name, int, "an unsigned integer")
    if value < 0 or value > MAX_UINT64:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f'{msg["type"]}.{name} must be 0..2**64-1')
    return value


def _str(msg: Mapping[str, Any], name: str) -> str:
    value: str = _field(msg, name, str, "a string")
    return value


def _token(msg: Mapping[str, Any]) -> Optional[str]:
    if msg.get("token") is None:
        return None
    token = _str(msg, "token")
    if len(token) > MAX_TOKEN_CHARS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"hello.token must be at most {MAX_TOKEN_CHARS} characters")
    return token


def parse_client(msg: Mapping[str, Any]) -> ClientMessage:
    """A decoded map from a client as a typed message; raises ProtocolError."""
    kind = msg["type"]
    if kind == "batch":
        batch_kind = _str(msg, "kind")
        if not KIND_PATTERN.fullmatch(batch_kind) or batch_kind == RESERVED_KIND:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"batch.kind must be {KIND_RULE}")
        payload = _field(msg, "payload", bytes, "binary (msgpack bin)")
        return Batch(seq=_uint(msg, "seq"), kind=batch_kind, count=_uint(msg, "count"), payload=payload)
    if kind == "hello":
        version = _field(msg, "version", int, "an integer")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}",
            )
        client_id = _str(msg, "client_id")
        if not client_id or len(client_id.encode("utf-8")) > MAX_CLIENT_ID_BYTES:
            raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                f"hello.client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes in UTF-8")
        return Hello(client_id=client_id, version=version, token=_token(msg))
    if kind == "ping":
        return Ping(nonce=msg.get("nonce"))
    if kind == "bye":
        return Bye()
    raise ProtocolError(ErrorCode.UNEXPECTED_TYPE, f"a client may not send {kind!r} frames")


def parse_server(msg: Mapping[str, Any]) -> ServerMessage:
    """A decoded map from a server as a typed message; raises ProtocolError."""
    kind = msg["type"]
    if kind == "ack":
        return Ack(seq=_uint(msg, "seq"))
    if kind == "nack":
        return Nack(seq=_uint(msg, "seq"), code=_str(msg, "code"), message=_str(msg, "message"))
    if kind == "welcome":
        return Welcome(
            server_id=_str(msg, "server_id"), max_frame=_uint(msg, "max_frame"),
            max_inflight=_uint(msg, "max_inflight"), version=_field(msg, "version", int, "an integer"),
        )
    if kind == "pong":
        return Pong(nonce=msg.get("nonce"))
    if kind == "error":
        return ErrorFrame(code=_str(msg, "code"), message=_str(msg, "message"))
    raise ProtocolError(ErrorCode.UNEXPECTED_TYPE, f"a server may not send {kind!r} frames")
