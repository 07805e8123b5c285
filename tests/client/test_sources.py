from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import BinaryIO

import msgpack
import pytest

from sluice.client.batch import OutBatch
from sluice.client.feed import Feed
from sluice.client.report import Stats
from sluice.client.sources import (
    METRICS,
    FileSource,
    GeneratorSource,
    MeasurementGenerator,
    parse_line,
)
from sluice.errors import RecordError
from sluice.records import validate_measurement


def _records(gen: MeasurementGenerator, sizes: list[int], ts: int = 1_700_000_000_000) -> list[dict]:
    return [r for n in sizes for r in msgpack.unpackb(gen.payload(n, ts), raw=False)]


def _strip_ts(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "ts"} for r in records]


def test_same_seed_and_instance_make_the_same_records_whatever_the_batching() -> None:
    a = _records(MeasurementGenerator(42, "inst", 10), [500, 500])
    b = _records(MeasurementGenerator(42, "inst", 10), [1, 999], ts=1_800_000_000_000)
    assert _strip_ts(a) == _strip_ts(b)


def test_other_seed_makes_other_values_and_ids() -> None:
    a = _records(MeasurementGenerator(1, "inst", 10), [100])
    b = _records(MeasurementGenerator(2, "inst", 10), [100])
    assert [r["value"] for r in a] != [r["value"] for r in b]
    assert not {r["id"] for r in a} & {r["id"] for r in b}


def test_two_clients_with_one_seed_never_share_ids() -> None:
    a = _records(MeasurementGenerator(7, "host-1", 10), [2000])
    b = _records(MeasurementGenerator(7, "host-2", 10), [2000])
    assert not {r["id"] for r in a} & {r["id"] for r in b}


def test_generated_records_are_valid_unique_measurements() -> None:
    gen = MeasurementGenerator(3, "inst", 7)
    records = _records(gen, [300, 300, 17], ts=1_700_000_000_123)
    assert gen.made == 617
    assert len({r["id"] for r in records}) == 617
    for r in records:
        assert validate_measurement(r) == r
        assert uuid.UUID(r["id"]).version == 4
        assert r["ts"] == 1_700_000_000_123
    assert {r["sensor"] for r in records} == {f"sensor-{i:05d}" for i in range(7)}
    # the payload is plain msgpack: the same bytes msgpack itself writes for these records
    gen2 = MeasurementGenerator(3, "inst", 7)
    payload = gen2.payload(5, 1_700_000_000_123)
    assert msgpack.packb(msgpack.unpackb(payload, raw=False), use_bin_type=True) == payload


def test_record_k_follows_the_documented_rule_across_batches() -> None:
    # Batches that cut through the id counter's table of low digits (4096 entries) and
    # through the cycle of sensors: record k is still sensor k % sensors, its id ends in k
    # as 12 hex digits, and its value is the k-th draw after the one the prefix took.
    sensors = 7
    gen = MeasurementGenerator(11, "inst", sensors)
    records = _records(gen, [4095, 2, 1, 8200, 3])
    rng = random.Random(11)
    rng.getrandbits(128)
    for k, record in enumerate(records):
        metric = METRICS[k % sensors % len(METRICS)]
        assert record["id"] == f"{gen.id_prefix}{k:012x}"
        assert record["sensor"] == f"sensor-{k % sensors:05d}"
        assert record["value"] == metric.low + (metric.high - metric.low) * rng.random()
    assert len(records) == gen.made == 12301


async def _collect(source: GeneratorSource | FileSource, maxsize: int = 1000) -> list[OutBatch]:
    feed = Feed(maxsize)
    await source.run(feed, asyncio.Event())
    feed.close()
    out = []
    while (batch := await feed.get()) is not None:
        out.append(batch)
    return out


async def test_generator_source_makes_count_records_in_batches() -> None:
    stats = Stats()
    source = GeneratorSource(MeasurementGenerator(1, "i", 5), stats, batch_size=100, linger=0.05,
                             rate=0, count=1050, duration=0)
    batches = await _collect(source)
    assert [b.count for b in batches] == [100] * 10 + [50]
    assert stats.produced == 1050
    assert all(len(msgpack.unpackb(b.payload)) == b.count for b in batches)


async def test_generator_source_at_a_rate_still_makes_exactly_count() -> None:
    stats = Stats()
    source = GeneratorSource(MeasurementGenerator(1, "i", 5), stats, batch_size=50, linger=0.01,
                             rate=20000, count=300, duration=0)
    batches = await _collect(source)
    assert sum(b.count for b in batches) == 300
    assert all(1 <= b.count <= 50 for b in batches)


async def test_generator_source_stops_when_asked() -> None:
    stats = Stats()
    source = GeneratorSource(MeasurementGenerator(1, "i", 5), stats, batch_size=10, linger=0.01,
                             rate=0, count=0, duration=0)
    feed = Feed(3)
    stop = asyncio.Event()
    task = asyncio.ensure_future(source.run(feed, stop))
    for _ in range(10_000):
        if len(feed) == 3:
            break
        await asyncio.sleep(0.001)
    stop.set()
    await feed.get()  # make room so the blocked put returns and the loop sees stop
    await asyncio.wait_for(task, 5)
    assert stats.produced in (30, 40)


GOOD = {"id": "r1", "sensor": "s", "metric": "m", "value": 1.5, "ts": 1_700_000_000_000}


def test_parse_line_validates_measurements() -> None:
    assert parse_line(json.dumps(GOOD).encode(), "measurement") == GOOD
    with pytest.raises(RecordError) as info:
        parse_line(b'{"id": "x"', "measurement")
    assert info.value.reason == "bad_json"
    with pytest.raises(RecordError) as info:
        parse_line(json.dumps({**GOOD, "value": "hot"}).encode(), "measurement")
    assert info.value.reason == "bad_value"
    # other kinds only need to be JSON objects
    assert parse_line(b'{"anything": [1, 2]}', "logs") == {"anything": [1, 2]}
    with pytest.raises(RecordError):
        parse_line(b"[1, 2]", "logs")


async def test_file_source_reports_bad_lines_by_number_and_sends_the_rest(tmp_path: Path) -> None:
    lines = []
    for i in range(1, 26):
        if i in (3, 17):
            lines.append('{"broken": ')
        elif i == 9:
            lines.append(json.dumps({**GOOD, "id": f"r{i}", "ts": "yesterday"}))
        elif i == 12:
            lines.append("   ")  # blank lines are skipped, not errors
        else:
            lines.append(json.dumps({**GOOD, "id": f"r{i}", "value": i}))
    path = tmp_path / "in.ndjson"
    path.write_text("\n".join(lines))  # no newline after the last line: it still counts
    stats = Stats()
    batches = await _collect(FileSource(str(path), stats, batch_size=10, linger=5.0))
    sent = [r for b in batches for r in msgpack.unpackb(b.payload, raw=False)]
    assert [b.count for b in batches] == [10, 10, 1]
    assert [r["id"] for r in sent] == [f"r{i}" for i in range(1, 26) if i not in (3, 9, 12, 17)]
    assert all(isinstance(r["value"], float) for r in sent)
    assert stats.invalid_lines == [3, 9, 17]
    assert stats.invalid == 3
    assert stats.produced == 21


def _pipe() -> tuple[BinaryIO, BinaryIO]:
    read_fd, write_fd = os.pipe()
    return os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")


async def test_file_source_flushes_a_partial_batch_after_linger(tmp_path: Path) -> None:
    # A pipe that stays open: the first records must go out on linger, not wait for EOF.
    stats = Stats()
    source = FileSource("-", stats, batch_size=100, linger=0.01)
    feed = Feed(10)
    reader, writer = _pipe()
    with reader, writer:
        source._open = lambda: (reader, False)  # type: ignore[method-assign]
        task = asyncio.ensure_future(source.run(feed, asyncio.Event()))
        writer.write((json.dumps(GOOD) + "\n").encode() * 3)
        writer.flush()
        first = await asyncio.wait_for(feed.get(), 10)
        assert first is not None and first.count == 3
        writer.close()
        await asyncio.wait_for(task, 10)


async def test_a_line_over_max_line_is_rejected_by_number_and_skipped(tmp_path: Path) -> None:
    # kind "logs" takes any JSON object, so only the length can reject these lines
    good = [json.dumps({"id": f"r{i}"}) for i in range(4)]
    huge = json.dumps({"blob": "x" * 300_000})  # spans several reads
    path = tmp_path / "in.ndjson"
    # lines: 1 good, 2 huge, 3 good, 4 just over the limit, 5 good, 6 huge without a newline
    just_over = json.dumps({"blob": "y" * 989})
    assert len(just_over) == 1001
    path.write_text("\n".join([good[0], huge, good[1], just_over, good[2], huge]))
    stats = Stats()
    batches = await _collect(FileSource(str(path), stats, batch_size=10, linger=5.0, kind="logs",
                                        max_line=1000))
    sent = [r["id"] for b in batches for r in msgpack.unpackb(b.payload, raw=False)]
    assert sent == ["r0", "r1", "r2"]
    assert stats.invalid_lines == [2, 4, 6]


async def test_a_line_over_the_default_limit_never_sits_in_memory_whole(tmp_path: Path) -> None:
    # 40 MiB in one line: held whole (and rejoined chunk by chunk, quadratic) before the cap
    path = tmp_path / "in.ndjson"
    path.write_bytes(b'{"blob": "' + b"z" * (40 << 20) + b'"}\n{"id": "r1"}\n')
    stats = Stats()
    started = time.monotonic()
    batches = await _collect(FileSource(str(path), stats, batch_size=10, linger=5.0, kind="logs"))
    assert time.monotonic() - started < 20
    assert [r.get("id") for b in batches for r in msgpack.unpackb(b.payload, raw=False)] == ["r1"]
    assert stats.invalid_lines == [1]


def test_file_source_open_fails_up_front_on_a_bad_path(tmp_path: Path) -> None:
    source = FileSource(str(tmp_path / "missing.ndjson"), Stats(), batch_size=10, linger=0.1)
    with pytest.raises(FileNotFoundError):
        source.open()
