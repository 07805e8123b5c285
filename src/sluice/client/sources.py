"""Where records come from: synthetic sensors (generator mode) or NDJSON (file mode).

Both hand whole batches to a :class:`~sluice.client.feed.Feed`, cut by ``batch_size`` and
``linger`` (a started batch is sent after ``linger`` seconds even if it is not full).

Generator mode is the load generator, so records are not built as dicts and packed: each
sensor's record is kept as msgpack bytes with holes for the id counter, the value and the
timestamp, and a batch fills the holes of all its records in a few C-level passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import random
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, cycle, islice, repeat, starmap
from operator import add, mul
from typing import Any, BinaryIO, Optional, Protocol

import msgpack
import orjson

from ..errors import RecordError
from ..logs import RateLimitedLog, get_logger
from ..protocol import DEFAULT_MAX_FRAME
from ..records import MEASUREMENT_KIND, validate_measurement
from .batch import OutBatch, array_header
from .feed import Feed
from .report import Stats

__all__ = [
    "METRICS",
    "FileSource",
    "GeneratorSource",
    "MeasurementGenerator",
    "Source",
    "parse_line",
    "random_seed",
]

log = get_logger(__name__)


class Source(Protocol):
    async def run(self, feed: Feed, stop: asyncio.Event) -> None:
        """Put batches on ``feed`` until the input ends or ``stop`` is set."""


def random_seed() -> int:
    return int.from_bytes(os.urandom(6), "big")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    low: float
    high: float


#: what synthetic sensors measure; sensor i measures METRICS[i % len(METRICS)]
METRICS = (
    Metric("temperature", "C", -10.0, 40.0),
    Metric("humidity", "%", 10.0, 90.0),
    Metric("pressure", "hPa", 980.0, 1040.0),
    Metric("co2", "ppm", 400.0, 2000.0),
    Metric("voltage", "V", 3.0, 3.6),
)
SITES = 8
_pack = msgpack.Packer(use_bin_type=True).pack
_UINT64 = struct.Struct(">Q").pack
#: "000" ... "fff": the low three hex digits of a record's id counter
_LOW_HEX = tuple(b"%03x" % n for n in range(4096))


class MeasurementGenerator:
    """Deterministic synthetic measurements.

    For a given ``seed``, ``instance`` and ``sensors``, record number *k* (counting from 0
    across every batch) is always the same apart from ``ts``: sensor ``k % sensors``, value
    from the k-th draw of ``random.Random(seed)``, and id ``<prefix><k as 12 hex digits>``.
    The prefix (the first 20 hex digits of a version-4 UUID: 80 bits, of which 74 vary,
    since the version and variant fix 6) is a hash of a draw from the seeded generator and
    the instance id, so two clients practically never make the same ids, even with the same
    seed, while one client reruns identically.
    """

    def __init__(self, seed: int, instance: str, sensors: int, *, extra_tags: int = 0,
                 tag_bytes: int = 16) -> None:
        if sensors < 1:
            raise ValueError("sensors must be at least 1")
        self.seed = seed
        self._rng = random.Random(seed)
        digest = hashlib.blake2b(
            self._rng.getrandbits(128).to_bytes(16, "big") + instance.encode(), digest_size=16
        ).digest()
        self.id_prefix = str(uuid.UUID(bytes=digest, version=4))[:24]
        self._next = 0
        self._extra_tags = extra_tags
        self._tag_bytes = tag_bytes
        head = b"\x87\xa2id\xd9\x24" + self.id_prefix.encode()
        templates = [self._template(i) for i in range(sensors)]
        # Each sensor's record is one struct: the map's start and the id's first 33
        # characters, its last three, the sensor's constant bytes, the value, then the
        # timestamp field.
        self._layouts = [struct.Struct(f">{len(head) + 9}s3s{len(middle)}sd12s")
                         for middle, _, _ in templates]
        self._head = head
        self._middles = [middle for middle, _, _ in templates]
        self._lows = [low for _, low, _ in templates]
        self._spans = [span for _, _, span in templates]

    def _template(self, index: int) -> tuple[bytes, float, float]:
        """Sensor ``index``'s record between its id and its value, and its value range."""
        metric = METRICS[index % len(METRICS)]
        tags = {"site": f"site-{index % SITES}"}
        for j in range(1, self._extra_tags + 1):
            # Filler that differs per sensor and tag, so compression does not flatter it.
            seed = hashlib.blake2b(f"{index}:{j}".encode(), digest_size=32).hexdigest()
            tags[f"t{j:02d}"] = (seed * (self._tag_bytes // len(seed) + 1))[:self._tag_bytes]
        middle = b"".join((
            b"\xa6sensor", _pack(f"sensor-{index:05d}"), b"\xa6metric", _pack(metric.name),
            b"\xa4unit", _pack(metric.unit), b"\xa4tags", _pack(tags),
            b"\xa5value\xcb",
        ))
        return middle, metric.low, metric.high - metric.low

    @property
    def made(self) -> int:
        return self._next

    def payload(self, count: int, ts: int) -> bytes:
        """The msgpack array of the next ``count`` records, all stamped ``ts`` (epoch ms).

        Column by column: the values, the ids and the sensors are each a C-level pass
        (``map``, ``islice`` of a ``cycle``) and a record is one ``pack``, so no bytecode
        runs per record. The id's 12 hex digits are two columns, the low three looked up
        in a table, since formatting a number is the costliest step of all.
        """
        start, end = self._next, self._next + count
        phase = start % len(self._layouts)

        def per_sensor(column: list[Any]) -> Iterator[Any]:
            return islice(cycle(column), phase, phase + count)

        draws = starmap(self._rng.random, repeat((), count))
        values = map(add, per_sensor(self._lows), map(mul, per_sensor(self._spans), draws))
        heads = chain.from_iterable(
            repeat(self._head + b"%09x" % high, min(end, (high + 1) << 12) - max(start, high << 12))
            for high in range(start >> 12, ((end - 1) >> 12) + 1)
        )
        lows = islice(cycle(_LOW_HEX), start & 0xFFF, (start & 0xFFF) + count)
        stamp = b"\xa2ts\xcf" + _UINT64(ts)
        records = b"".join(map(
            struct.Struct.pack, per_sensor(self._layouts), heads, lows,
            per_sensor(self._middles), values, repeat(stamp),
        ))
        self._next = end
        return array_header(count) + records


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    if delay > 0:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


class GeneratorSource:
    """Synthetic sensors at ``rate`` records/s (0 = as fast as the streams take them),
    until ``count`` records (0 = no limit) or ``duration`` seconds (0 = no limit)."""

    def __init__(
        self, generator: MeasurementGenerator, stats: Stats, *, batch_size: int, linger: float,
        rate: float, count: int, duration: float, kind: str = MEASUREMENT_KIND,
    ) -> None:
        self._gen = generator
        self._stats = stats
        self._batch_size = batch_size
        self._linger = linger
        self._rate = rate
        self._count = count
        self._duration = duration
        self._kind = kind

    async def _emit(self, feed: Feed, count: int) -> None:
        payload = self._gen.payload(count, _now_ms())
        self._stats.produced += count
        self._stats.payload_bytes += len(payload)
        await feed.put(OutBatch(self._kind, count, payload))

    async def run(self, feed: Feed, stop: asyncio.Event) -> None:
        start = time.monotonic()
        end = start + self._duration if self._duration > 0 else float("inf")
        limit = self._count if self._count > 0 else float("inf")
        made = 0
        while not stop.is_set() and made < limit:
            now = time.monotonic()
            if now >= end:
                break
            want = int(min(self._batch_size, limit - made))
            if self._rate > 0:
                # Records fall due at start + k/rate. Send when a batch's worth is due, or
                # when the oldest due record has waited `linger`, whichever comes first.
                due = int((now - start) * self._rate) - made
                if due < want:
                    first_due = start + (made + 1) / self._rate
                    full_at = start + (made + want) / self._rate
                    wake = min(full_at, first_due + self._linger, end)
                    await _sleep_or_stop(stop, wake - now)
                    now = time.monotonic()
                    due = int((min(now, end) - start) * self._rate) - made
                want = min(want, due)
                if want <= 0:
                    continue
            await self._emit(feed, want)
            made += want


# -- file mode -----------------------------------------------------------------------------


def parse_line(raw: bytes, kind: str) -> dict[str, Any]:
    """One NDJSON line as a record of ``kind``; raises RecordError with a reason."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError("bad_json", f"not JSON: {exc}") from exc
    if kind == MEASUREMENT_KIND:
        return validate_measurement(obj)
    if not isinstance(obj, dict):
        raise RecordError("not_a_map", f"a record must be a JSON object, not {type(obj).__name__}")
    return obj


class _ChunkReader:
    """Reads a file or stdin on a daemon thread, so a blocked read never holds the loop
    (and a terminal or pipe that never ends never holds process exit)."""

    CHUNK = 1 << 16

    def __init__(self, stream: BinaryIO, close: bool) -> None:
        self._stream = stream
        self._close = close
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=16)
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._read, name="sluice-file-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    data = self._stream.read1(self.CHUNK)  # type: ignore[attr-defined]
                except BaseException as exc:
                    self._hand_over(exc)
                    return
                self._hand_over(data)
                if not data:
                    return
        finally:
            if self._close:
                self._stream.close()

    def _hand_over(self, item: bytes | BaseException) -> None:
        while not self._stopped.is_set():
            try:
                self._chunks.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            self._loop.call_soon_threadsafe(self._ready.set)

    async def next(self, timeout: float | None) -> bytes | None:
        """The next chunk (b"" at end of input), or None when ``timeout`` passes first."""
        while True:
            for _ in range(2):
                try:
                    item = self._chunks.get_nowait()
                except queue.Empty:
                    self._ready.clear()  # then look again: a put may have raced the clear
                    continue
                if isinstance(item, BaseException):
                    raise item
                return item
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return None

    def stop(self) -> None:
        self._stopped.set()


class FileSource:
    """NDJSON from a file or ``-`` (stdin): each line is validated; bad lines are logged
    with their line numbers, counted, and not sent. Blank lines are skipped. A line longer
    than ``max_line`` bytes (by default the largest frame, so it could never be sent) is
    rejected as ``line_too_long`` without being held: the rest of it is skipped up to the
    next newline, so memory stays bounded whatever the input."""

    def __init__(self, path: str, stats: Stats, *, batch_size: int, linger: float,
                 kind: str = MEASUREMENT_KIND, max_line: int = DEFAULT_MAX_FRAME) -> None:
        self._path = path
        self._stats = stats
        self._batch_size = batch_size
        self._linger = linger
        self._kind = kind
        self._max_line = max_line
        self._rejects = RateLimitedLog(log, interval=1.0)
        self._opened: Optional[tuple[BinaryIO, bool]] = None

    def open(self) -> None:
        """Open the input now, so a bad path fails up front (raises OSError)."""
        if self._opened is None:
            if self._path == "-":
                self._opened = (sys.stdin.buffer, False)
            else:
                # The reader thread closes the file when it is done with it.
                self._opened = (open(self._path, "rb"), True)  # noqa: SIM115

    def _open(self) -> tuple[BinaryIO, bool]:
        self.open()
        assert self._opened is not None
        opened, self._opened = self._opened, None
        return opened

    async def _flush(self, feed: Feed, records: list[dict[str, Any]]) -> None:
        payload = msgpack.packb(records, use_bin_type=True)
        self._stats.produced += len(records)
        await feed.put(OutBatch(self._kind, len(records), payload))

    def _take(self, lineno: int, raw: bytes, into: list[dict[str, Any]]) -> None:
        if not raw.strip():
            return
        if len(raw) > self._max_line:
            self._reject(lineno, "line_too_long", f"longer than {self._max_line} bytes")
            return
        try:
            into.append(parse_line(raw, self._kind))
        except RecordError as exc:
            self._reject(lineno, exc.reason, exc.message)

    def _reject(self, lineno: int, reason: str, message: str) -> None:
        self._stats.reject_line(lineno)
        # The first hundred are each logged; past that, a flood is summarized.
        if self._stats.invalid <= 100:
            log.warning("invalid_line", line=lineno, reason=reason, error=message)
        else:
            self._rejects.warning("invalid", "invalid_line", line=lineno, reason=reason, error=message)

    async def run(self, feed: Feed, stop: asyncio.Event) -> None:
        stream, close = self._open()
        reader = _ChunkReader(stream, close)
        pending: list[dict[str, Any]] = []
        first_at = 0.0
        tail = bytearray()  # the start of a line whose newline has not come yet
        skipping = False    # inside a line already rejected as too long
        lineno = 0
        try:
            while not stop.is_set():
                timeout = None
                if pending:
                    timeout = max(0.0, first_at + self._linger - time.monotonic())
                chunk = await reader.next(timeout)
                if chunk is None:  # linger expired on a partial batch
                    await self._flush(feed, pending)
                    pending = []
                    continue
                if skipping:
                    newline = chunk.find(b"\n")
                    if newline < 0 and chunk:
                        continue
                    skipping = False
                    lineno += 1  # the long line ends here (or at the end of input)
                    chunk = chunk[newline + 1:] if newline >= 0 else chunk
                    if newline >= 0 and not chunk:
                        continue
                if not chunk:  # end of input
                    lines = [bytes(tail)] if tail else []
                else:
                    last = chunk.rfind(b"\n")
                    if last < 0:
                        tail += chunk
                        if len(tail) > self._max_line:
                            self._reject(lineno + 1, "line_too_long", f"longer than {self._max_line} bytes")
                            tail = bytearray()
                            skipping = True
                        continue
                    # Each byte is copied a bounded number of times: no quadratic rejoining.
                    lines = (bytes(tail) + chunk[:last]).split(b"\n") if tail else chunk[:last].split(b"\n")
                    tail = bytearray(chunk[last + 1:])
                for raw in lines:
                    lineno += 1
                    was_empty = not pending
                    self._take(lineno, raw, pending)
                    if was_empty and pending:
                        first_at = time.monotonic()
                    if len(pending) >= self._batch_size:
                        await self._flush(feed, pending)
                        pending = []
                if not chunk:
                    break
            if pending:
                await self._flush(feed, pending)
        finally:
            reader.stop()
