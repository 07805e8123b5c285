"""The query API for tests: measurements made and indexed straight into Elasticsearch,
the API in-process (``api_client``) or as a real ``sluice api`` process (``api_process``).

Fixtures::

    measurements   function  list[dict]: a seeded, deterministic set of documents
    seeded_prefix  function  str: an index prefix holding ``measurements`` (template on)
    api_client     function  async factory (prefix, **opts) -> aiohttp TestClient
    api_process    function  factory (prefix, **opts) -> ApiProcess(url); stopped afterwards

Values are multiples of 1/1024 of moderate size, so any summation order gives the same
double: sums and averages can be compared exactly with the API's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import random
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sluice.api.app import build_app
from sluice.api.settings import ApiSettings
from sluice.es import ensure_template, index_name, make_client

__all__ = [
    "BASE_TS",
    "ApiProcess",
    "index_documents",
    "iso_ms",
    "make_measurements",
]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KIND = "measurement"
#: 2026-11-20T00:00:00Z: a fixed origin, so failures reproduce
BASE_TS = 1_795_132_800_000
_HOUR = 3_600_000


def iso_ms(ms: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_measurements(
    n: int = 600,
    *,
    seed: int = 7,
    sensors: int = 8,
    metrics: Sequence[str] = ("temperature", "humidity", "pressure"),
    start: int = BASE_TS,
    span_ms: int = 72 * _HOUR,
    ingested_at: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Documents in the shape the measurement parser indexes.

    Every tenth one repeats the previous timestamp, so pagination must break ties.
    """
    rnd = random.Random(seed)
    docs = []
    ts = start
    for i in range(n):
        if i % 10 != 9:
            ts = start + rnd.randrange(span_ms)
        doc: dict[str, Any] = {
            "id": f"m-{seed}-{i:05d}",
            "sensor": f"sensor-{rnd.randrange(sensors):02d}",
            "metric": rnd.choice(list(metrics)),
            "value": rnd.randint(-40_000, 160_000) / 1024,
            "unit": "u",
            "ts": ts,
            "tags": {"site": rnd.choice(["north", "south", "lab"]), "floor": str(rnd.randrange(3))},
            "@timestamp": iso_ms(ts),
            "ingested_at": iso_ms(ingested_at if ingested_at is not None else ts),
            "parser": "measurement",
        }
        docs.append(doc)
    return docs


async def index_documents(
    es_url: str, prefix: str, docs: Sequence[dict[str, Any]], *, kind: str = KIND, template: bool = True
) -> None:
    """Bulk-index ``docs`` into their daily indices (``_id`` = ``id``) and refresh."""
    if template:
        client = make_client(es_url)
        try:
            await ensure_template(client, prefix)
        finally:
            await client.close()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for chunk_start in range(0, len(docs), 2000):
            lines = []
            for doc in docs[chunk_start:chunk_start + 2000]:
                ts = doc.get("ts", 0)
                index = index_name(prefix, kind, ts)
                action: dict[str, Any] = {"_index": index}
                if "id" in doc:
                    action["_id"] = doc["id"]
                lines.append(json.dumps({"index": action}))
                lines.append(json.dumps(doc))
            body = "\n".join(lines) + "\n"
            async with session.post(
                f"{es_url}/_bulk", data=body, headers={"Content-Type": "application/x-ndjson"}
            ) as resp:
                result = await resp.json(content_type=None)
                assert resp.status == 200, result
                assert not result.get("errors"), [i for i in result["items"] if "error" in next(iter(i.values()))][:3]
        async with session.post(
            f"{es_url}/{prefix}-*/_refresh?ignore_unavailable=true&allow_no_indices=true"
        ) as resp:
            assert resp.status == 200, await resp.text()


@pytest.fixture
def measurements() -> list[dict[str, Any]]:
    return make_measurements()


@pytest.fixture
async def seeded_prefix(es_url: str, es_index_prefix: str, measurements: list[dict[str, Any]]) -> str:
    await index_documents(es_url, es_index_prefix, measurements)
    return es_index_prefix


ApiClientFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def api_client(es_url: str) -> AsyncIterator[ApiClientFactory]:
    """``await api_client(prefix, amqp_url="", namespace="sluice", kinds=(...))``: the
    options are ApiSettings fields, plus ``install_template`` (default off)."""
    clients: list[TestClient] = []

    async def make(prefix: str, install_template: bool = False, **opts: Any) -> TestClient:
        opts.setdefault("amqp_url", "")
        opts.setdefault("kinds", (KIND,))
        opts.setdefault("es_timeout", 5.0)
        settings = ApiSettings(es_url=es_url, index_prefix=prefix, **opts)
        app = build_app(settings, install_template=install_template)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[str]
    log: list[str]
    reader: threading.Thread

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def start_api_process(
    es_url: str, prefix: str, *, amqp_url: str = "", namespace: str = "sluice",
    kinds: str = KIND, extra: Sequence[str] = (), startup_timeout: float = 30.0,
) -> ApiProcess:
    """``python -m sluice api --port 0 ...``; returns once it logged its URL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(ROOT, "src"), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "sluice", "api", "--host", "127.0.0.1", "--port", "0",
        "--es-url", es_url, "--index-prefix", prefix, "--kinds", kinds,
        "--namespace", namespace, "--amqp-url", amqp_url, *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    found: queue.Queue[Optional[str]] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "api_listening":
                    found.put(str(event["url"]))
        found.put(None)

    reader = threading.Thread(target=read, name="api-stderr", daemon=True)
    reader.start()
    try:
        url = found.get(timeout=startup_timeout)
    except queue.Empty:
        url = None
    if url is None:
        proc.kill()
        proc.wait()
        reader.join(10)
        if proc.stderr is not None:
            proc.stderr.close()
        raise RuntimeError(f"sluice api did not start: {''.join(lines)[-3000:]}")
    return ApiProcess(url, proc, lines, reader)


@pytest.fixture
def api_process(es_url: str) -> Iterator[Callable[..., ApiProcess]]:
    """``api_process(prefix, amqp_url="", namespace="sluice")`` -> a running ``sluice api``."""
    started: list[ApiProcess] = []

    def start(prefix: str, **opts: Any) -> ApiProcess:
        proc = start_api_process(es_url, prefix, **opts)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
