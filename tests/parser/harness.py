"""Helpers for the parser worker tests: records, publishing the way ``sluice server`` does,
``sluice parser`` subprocesses, the dead-letter queue, and checking stored documents
against the records that were sent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import aiohttp
import aiormq
import msgpack

from sluice.es import index_name
from sluice.topology import Topology
from tests.support.metrics import parse_metrics
from tests.support.rabbitmq import free_port

__all__ = [
    "ParserProcess",
    "Publisher",
    "assert_stored_exactly",
    "make_records",
    "queue_depth",
    "read_queue",
    "start_parser",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# 2024-03-01T23:59:00Z: batches straddle midnight, so records land in two daily indices.
BASE_TS = 1709337540000


def make_records(n: int, *, start: int = 0, step_ms: int = 37) -> list[dict[str, Any]]:
    """Measurement records with unique ids and values that identify them."""
    tag = uuid.uuid4().hex[:6]
    records = []
    for i in range(start, start + n):
        record: dict[str, Any] = {
            "id": f"{tag}-{i:07d}-{uuid.uuid4().hex[:8]}",
            "sensor": f"sensor-{i % 17}",
            "metric": ("temperature", "humidity")[i % 2],
            "value": i * 0.25 - 100,
            "ts": BASE_TS + i * step_ms,
        }
        if i % 3:
            record["unit"] = "C"
        if i % 5 == 0:
            record["tags"] = {"site": f"site-{i % 4}", "row": str(i)}
        records.append(record)
    return records


def batches(records: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(records[i:i + size]) for i in range(0, len(records), size)]


class Publisher:
    """Publishes raw batches like ``sluice server``: msgpack array body, ``raw.<kind>`` on
    ``<ns>.ingest``, persistent, confirmed, with a message_id per batch."""

    def __init__(self, amqp_url: str, namespace: str, kinds: Iterable[str] = ("measurement",)):
        self._url = amqp_url
        self.topology = Topology(namespace)
        self._kinds = tuple(kinds)
        self._conn: Optional[aiormq.abc.AbstractConnection] = None
        self._channel: Optional[aiormq.abc.AbstractChannel] = None
        self.published = 0

    async def __aenter__(self) -> Publisher:
        self._conn = await aiormq.connect(self._url)
        self._channel = await self._conn.channel(publisher_confirms=True)
        await self.topology.declare(self._channel, self._kinds)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def publish(
        self, kind: str, payload: Union[Sequence[Any], bytes], message_id: Optional[str] = None
    ) -> None:
        assert self._channel is not None
        body = payload if isinstance(payload, bytes) else msgpack.packb(list(payload))
        count = 0 if isinstance(payload, bytes) else len(payload)
        confirm = await self._channel.basic_publish(
            body,
            exchange=self.topology.exchange,
            routing_key=self.topology.routing_key(kind),
            properties=aiormq.spec.Basic.Properties(
                content_type="application/msgpack", delivery_mode=2,
                message_id=message_id or f"test:{uuid.uuid4().hex}",
                headers={"kind": kind, "count": count, "client_id": "test"},
            ),
            mandatory=True,
        )
        assert isinstance(confirm, aiormq.spec.Basic.Ack)
        self.published += 1


async def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue`` (not counting ones delivered and unacked)."""
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def read_queue(amqp_url: str, queue: str, expected: int, timeout: float = 60) -> list[Any]:
    """Take ``expected`` messages off ``queue`` (fails if they do not arrive), then check
    that nothing else is there."""
    conn = await aiormq.connect(amqp_url)
    got: list[Any] = []
    try:
        channel = await conn.channel()
        deadline = time.monotonic() + timeout
        while len(got) < expected:
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is None:  # GetEmpty
                assert time.monotonic() < deadline, f"{queue}: {len(got)} of {expected} arrived"
                await asyncio.sleep(0.2)
                continue
            got.append(message)
        await asyncio.sleep(0.5)
        extra = await channel.basic_get(queue, no_ack=True)
        assert extra.delivery_tag is None, f"{queue} holds more than the {expected} expected"
    finally:
        await conn.close()
    return got


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)




@dataclass
class ParserProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    log_path: Path
    _log: Any = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{self.http_port}{path}", timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            return resp.status, await resp.text()

    async def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value; also ``name`` -> sum over its labels."""
        status, text = await self.get("/metrics")
        assert status == 200
        return parse_metrics(text)

    async def metric(self, name: str) -> float:
        return (await self.metrics()).get(f"sluice_parser_{name}", 0.0)

    async def wait_ready(self, timeout: float = 60) -> None:
        async def ready() -> bool:
            self.assert_running()
            try:
                status, _ = await self.get("/readyz")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False
            return status == 200

        try:
            await wait_until(ready, timeout, f"parser {self.pid} to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.log_tail()}") from None

    def assert_running(self) -> None:
        code = self.proc.poll()
        assert code is None, f"parser exited with {code}; log:\n{self.log_tail()}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, from /proc."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        """The whole log: assertions must never search a tail, since how many lines follow
        an event depends on the machine's speed."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"

    def log_tail(self, limit: int = 6000) -> str:
        """The end of the log, for failure messages only."""
        return self.log()[-limit:]

    def events(self, name: Optional[str] = None) -> list[dict[str, Any]]:
        """The structured log lines (JSON objects), all of them or those whose ``event``
        is ``name``; lines that are not JSON (a traceback, say) are skipped."""
        found = []
        for line in self.log().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self._log.close()


def parser_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)])
    env.update(extra or {})
    return env


def start_parser(
    log_dir: Path,
    *,
    amqp_url: str,
    namespace: str,
    es_url: str,
    index_prefix: str,
    args: Sequence[str] = (),
    env: Optional[dict[str, str]] = None,
) -> ParserProcess:
    port = free_port()
    log_path = log_dir / f"parser-{uuid.uuid4().hex[:6]}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by ParserProcess.stop
    cmd = [
        sys.executable, "-m", "sluice", "parser", "--amqp-url", amqp_url,
        "--namespace", namespace, "--es-url", es_url, "--index-prefix", index_prefix,
        "--http-port", str(port), "--log-level", "info",
        # the records here carry fixed timestamps from 2024: no ts window
        "--ts-max-age-days", "0", *args,
    ]
    proc = subprocess.Popen(cmd, env=parser_env(env), stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    return ParserProcess(proc, port, log_path, log)


def assert_stored_exactly(
    hits: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], prefix: str,
    kind: str = "measurement",
) -> None:
    """The stored documents are the records sent, each exactly once, with their values."""
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records), "the test sent duplicate ids"
    ids = [h["_id"] for h in hits]
    assert len(ids) == len(set(ids)), "a record was stored twice"
    missing = set(by_id) - set(ids)
    unexpected = set(ids) - set(by_id)
    assert not missing, f"{len(missing)} records missing, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} unexpected documents, e.g. {sorted(unexpected)[:3]}"
    for hit in hits:
        record, doc = by_id[hit["_id"]], hit["_source"]
        assert hit["_index"] == index_name(prefix, kind, record["ts"])
        assert doc["id"] == record["id"]
        assert doc["sensor"] == record["sensor"]
        assert doc["metric"] == record["metric"]
        assert doc["value"] == float(record["value"])
        assert doc["ts"] == record["ts"]
        assert doc.get("unit") == record.get("unit")
        assert doc.get("tags") == record.get("tags")
        assert doc["parser"] == "measurement"
