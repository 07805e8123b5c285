#!/usr/bin/env python3
"""Benchmark: records/s of one ``sluice parser`` process, and of a naive baseline.

1. Starts a minimal Elasticsearch-compatible bulk endpoint in its own process. It answers
   every bulk item as created, parsing only enough of the ndjson to count actions, so the
   parser's own cost is what gets measured, not a store's.
2. Fills a fresh namespace's queue with ``--records`` measurement records in messages of
   ``--batch`` records, published the way ``sluice server`` does (msgpack array body,
   routing key ``raw.measurement`` on ``<ns>.ingest``, persistent, confirmed).
3. Starts ``--processes`` (default 1) ``sluice parser`` processes on that queue and times
   them from the moment startup is done (a parser installs the index template right
   before consuming) to the answer to the bulk that completes the last record; then
   checks the queue is empty. Also prints the parsers' CPU time per record, which the
   other work on a shared machine does not change much.
4. In this process, the naive baseline: the same parsing, then one elasticsearch-py
   ``create()`` request per document, for ``--naive`` records.
5. In this process, the AMQP floors: the same messages consumed and acked (``multiple``,
   every 100) without looking at them, once with aiormq and once with the parser's own
   consumer (``sluice.amqpconsumer``). With small messages (``--batch 5``) the parser can
   be no faster than the latter, whatever it does per record.
6. The broker floor: the same again, drained by ``scripts/rawamqp.py``, which parses the
   frames with ``struct`` and builds nothing per message: what RabbitMQ can deliver to one
   consumer here, so that the AMQP layer's share of the floors above shows.

The floors consume with the window the parser gives RabbitMQ for messages of ``--batch``
records (or ``--prefetch``, when given).

Prints the rates (records/s, and messages/s) and the ratio to the naive baseline.
Targets: >= 20x naive, and >= 250,000 records/s per process; with messages of at most 10
records (``--batch 5``: what the compose load generator sends at its default rate),
>= 20,000 messages/s per process instead.

    PYTHONPATH=src python scripts/bench_parser.py [--records 200000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

SCRIPT = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(SCRIPT))
sys.path.insert(0, os.path.join(ROOT, "src"))

import benchlib  # noqa: E402
from benchlib import delete_topology, serve  # noqa: E402

TARGET_RATE = 250_000
TARGET_RATIO = 20
#: messages of at most this many records are judged by messages/s, not records/s
SMALL_BATCH = 10
TARGET_MESSAGES = 20_000

# One realistic bulk item (what Elasticsearch answers for a created document).
_ITEM = (
    b'{"create":{"_index":"bench","_id":"-","_version":1,"result":"created",'
    b'"_shards":{"total":1,"successful":1,"failed":0},"_seq_no":0,"_primary_term":1,'
    b'"status":201}}'
)
_SMALL_ITEM = b'{"create":{"status":201}}'
_HEADERS = {"X-Elastic-Product": "Elasticsearch", "Content-Type": "application/json"}


# -- the endpoint (runs in its own process) ------------------------------------------------


def serve_endpoint() -> None:
    from aiohttp import web

    stats: dict[str, Any] = {"docs": 0, "bulks": 0, "creates": 0, "template_at": None,
                             "first_bulk_at": None, "last_bulk_at": None}

    def json_response(payload: bytes, status: int = 200) -> web.Response:
        return web.Response(body=payload, status=status, headers=_HEADERS)

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith("/_bulk"):
            body = await request.read()
            now = time.monotonic()
            # Every action is a create: an action line and a source line.
            n = body.count(b"\n") // 2
            stats["docs"] += n
            stats["bulks"] += 1
            stats["first_bulk_at"] = stats["first_bulk_at"] or now
            stats["last_bulk_at"] = now
            # Like Elasticsearch, honour filter_path (the parser asks for statuses only).
            item = _SMALL_ITEM if "filter_path" in request.query else _ITEM
            return json_response(b'{"errors":false,"items":[' + b",".join([item] * n) + b"]}")
        if "/_create/" in path:
            await request.read()
            stats["creates"] += 1
            return json_response(b'{"_index":"bench","_id":"-","_version":1,"result":"created",'
                                 b'"_seq_no":0,"_primary_term":1}', status=201)
        if path.startswith("/_index_template/"):
            await request.read()
            stats["template_at"] = time.monotonic()
            return json_response(b'{"acknowledged":true}')
        if path == "/_bench/stats":
            return json_response(json.dumps(stats).encode())
        if path == "/_bench/reset":
            stats.update(docs=0, bulks=0, creates=0, template_at=None, first_bulk_at=None,
                         last_bulk_at=None)
            return json_response(b"{}")
        # "/" and anything else: enough for the client's product check and ping.
        return json_response(
            b'{"name":"bench","cluster_name":"bench","version":{"number":"9.0.0",'
            b'"build_flavor":"default"},"tagline":"You Know, for Search"}'
        )

    serve(handle, lambda port: {"url": f"http://127.0.0.1:{port}"})


# -- the benchmark -------------------------------------------------------------------------


def make_records(n: int) -> list[dict[str, Any]]:
    base = int(time.time() * 1000)
    return [
        {
            "id": str(uuid.uuid4()),
            "sensor": f"sensor-{i % 500}",
            "metric": ("temperature", "humidity", "pressure")[i % 3],
            "value": (i % 1000) / 10.0,
            "unit": "C",
            "ts": base + i,
            "tags": {"site": f"site-{i % 7}"},
        }
        for i in range(n)
    ]


async def fill_queue(amqp_url: str, namespace: str, records: list[dict[str, Any]], batch: int) -> int:
    import aiormq
    import msgpack

    from sluice.topology import Topology

    topology = Topology(namespace)
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await topology.declare(channel, ["measurement"])
        confirms = []
        for n, start in enumerate(range(0, len(records), batch)):
            body = msgpack.packb(records[start:start + batch])
            confirms.append(channel.basic_publish(
                body, exchange=topology.exchange, routing_key=topology.routing_key("measurement"),
                properties=aiormq.spec.Basic.Properties(
                    delivery_mode=2, message_id=f"bench-{n}", content_type="application/msgpack",
                    headers={"x-sluice-count": min(batch, len(records) - start)},
                ),
                mandatory=True,
            ))
            if len(confirms) >= 100:
                await asyncio.gather(*confirms)
                confirms = []
        await asyncio.gather(*confirms)
        ok = await channel.queue_declare(topology.raw_queue("measurement"), passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def queue_depth(amqp_url: str, namespace: str) -> int:
    from sluice.topology import Topology

    return await benchlib.queue_depth(amqp_url, Topology(namespace).raw_queue("measurement"))


async def delete_namespace(amqp_url: str, namespace: str) -> None:
    from sluice.topology import Topology

    await delete_topology(amqp_url, Topology(namespace), ["measurement"])


async def endpoint_stats(url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/_bench/stats") as resp:
        stats: dict[str, Any] = await resp.json(content_type=None)
        return stats


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    # Started before the clock runs; nothing else happens on the loop meanwhile.
    return subprocess.Popen(cmd, **kwargs)


async def run_parser(args: argparse.Namespace, es_url: str, namespace: str, n: int) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SLUICE_PARSERS", None)
    # BENCH_PYTHON_ARGS="-m cProfile -o parser.prof" profiles the parser process.
    cmd = [
        sys.executable, *os.environ.get("BENCH_PYTHON_ARGS", "").split(),
        "-m", "sluice", "parser", "--amqp-url", args.amqp_url,
        "--namespace", namespace, "--es-url", es_url, "--index-prefix", "bench",
        "--http-port", "-1", "--log-level", "warning",
        "--bulk-size", str(args.bulk_size),
        *(["--prefetch", str(args.prefetch)] if args.prefetch else []),
    ]
    procs = [spawn(cmd, env=env) for _ in range(args.processes)]
    try:
        deadline = time.monotonic() + args.timeout
        cpu_start = None
        while True:
            stats = await endpoint_stats(es_url)
            if cpu_start is None and stats["template_at"] is not None:
                cpu_start = sum(cpu_seconds(proc.pid) for proc in procs)
            if stats["docs"] >= n:
                cpu = sum(cpu_seconds(proc.pid) for proc in procs) - (cpu_start or 0.0)
                break
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit(f"a parser exited early with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {stats['docs']} of {n} records indexed")
            await asyncio.sleep(0.05)
        if stats["docs"] != n:
            raise SystemExit(f"the endpoint received {stats['docs']} documents, expected {n}")
        elapsed = float(stats["last_bulk_at"]) - float(stats["template_at"])
        # Acks follow the last bulk's answer; SIGTERM drains, then the queue must be empty.
        for _ in range(100):
            if await queue_depth(args.amqp_url, namespace) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        statuses = [proc.wait(60) for proc in procs]
    if any(statuses):
        raise SystemExit(f"a parser exited with status {max(statuses)}")
    left = await queue_depth(args.amqp_url, namespace)
    if left:
        raise SystemExit(f"{left} messages were left in the queue after the parser stopped")
    print(f"parser processes: {args.processes}: {n} records in {stats['bulks']} bulk requests, "
          f"{elapsed:.3f} s; their CPU time meanwhile {cpu:.3f} s "
          f"({n / cpu:,.0f} records, {n / args.batch / cpu:,.0f} messages per CPU-second)")
    return n / elapsed


def floor_window(args: argparse.Namespace) -> int:
    """The prefetch window the floors consume with: ``--prefetch``, or the one the parser
    gives RabbitMQ by default for messages of ``--batch`` records."""
    if args.prefetch:
        return int(args.prefetch)
    from sluice.parser.settings import ParserSettings

    defaults = ParserSettings()
    return max(1, min(defaults.prefetch, defaults.prefetch_records // args.batch))


class _Seen:
    """Counts a floor's deliveries, times them from the first, and says when to ack."""

    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.count = 0
        self.started = self.cpu_started = 0.0
        self.done = asyncio.Event()

    def one(self) -> bool:
        """One more delivery; True when it is to be acked (with multiple, every 100)."""
        self.count += 1
        if self.count == 1:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()
        if self.count == self.messages:
            self.done.set()
        return self.count % 100 == 0 or self.count == self.messages

    async def finished(self) -> tuple[float, float]:
        await self.done.wait()
        return time.perf_counter() - self.started, time.process_time() - self.cpu_started


async def drain_aiormq(url: str, queue: str, messages: int, window: int) -> tuple[float, float]:
    import aiormq

    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel()
        await channel.basic_qos(prefetch_count=window)
        seen = _Seen(messages)

        async def on_message(message: Any) -> None:
            if seen.one():
                await channel.basic_ack(message.delivery_tag, multiple=True)

        await channel.basic_consume(queue, on_message)
        return await seen.finished()
    finally:
        await conn.close()


async def drain_lean(url: str, queue: str, messages: int, window: int) -> tuple[float, float]:
    from sluice.amqpconsumer import Delivered, connect

    conn = await connect(url)
    try:
        channel = await conn.channel()
        await channel.basic_qos(prefetch_count=window)
        seen = _Seen(messages)
        acks: list[asyncio.Future[None]] = []

        def on_message(message: Delivered) -> None:
            if seen.one():
                acks.append(asyncio.ensure_future(
                    channel.basic_ack(message.delivery_tag, multiple=True)))

        await channel.basic_consume(queue, on_message)
        return await seen.finished()
    finally:
        await conn.close()


async def run_floor(args: argparse.Namespace, records: list[dict[str, Any]], what: str,
                    drain: Callable[[str, str, int, int], Awaitable[tuple[float, float]]]) -> float:
    """Messages/s of a consumer that only acks (``drain``), on a queue of its own."""
    from sluice.topology import Topology

    namespace = f"benchfloor{uuid.uuid4().hex[:8]}"
    try:
        messages = await fill_queue(args.amqp_url, namespace, records, args.batch)
        elapsed, cpu = await asyncio.wait_for(drain(
            args.amqp_url, Topology(namespace).raw_queue("measurement"), messages,
            floor_window(args)), args.timeout)
    finally:
        await delete_namespace(args.amqp_url, namespace)
    print(f"{what}: {messages} messages consumed and acked, {elapsed:.3f} s; its CPU time "
          f"{cpu:.3f} s ({messages / cpu:,.0f} messages per CPU-second)")
    return messages / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to show the cost apart from
    whatever else competes for the machine."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_naive(es_url: str, records: list[dict[str, Any]]) -> float:
    from sluice.es import index_name, make_client
    from sluice.parser.registry import build_chain

    chain = build_chain(["measurement"])
    client = make_client(es_url)
    try:
        await client.info()  # connection and product check outside the timing
        started = time.perf_counter()
        for record in records:
            doc = chain.parse(record)
            await client.create(index=index_name("bench", "measurement", doc["ts"]),
                                id=doc["id"], document=doc)
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    print(f"naive baseline: {len(records)} records, one create() request each, {elapsed:.3f} s")
    return len(records) / elapsed


async def bench(args: argparse.Namespace) -> int:
    endpoint = spawn([sys.executable, SCRIPT, "--endpoint"], stdout=subprocess.PIPE, text=True)
    try:
        assert endpoint.stdout is not None
        es_url = json.loads(endpoint.stdout.readline())["url"]
        namespace = f"bench{uuid.uuid4().hex[:10]}"
        records = make_records(args.records)
        try:
            queued = await fill_queue(args.amqp_url, namespace, records, args.batch)
            print(f"queue {namespace}.raw.measurement: {len(records)} records in {queued} "
                  f"messages of {args.batch}")
            rate = await run_parser(args, es_url, namespace, len(records))
        finally:
            await delete_namespace(args.amqp_url, namespace)
        naive = await run_naive(es_url, make_records(args.naive))
        from rawamqp import drain as drain_wire

        floor = await run_floor(args, records, "AMQP floor (aiormq)", drain_aiormq)
        lean = await run_floor(args, records, "lean floor (sluice.amqpconsumer)", drain_lean)
        broker = await run_floor(args, records, "broker floor (no AMQP library)", drain_wire)
    finally:
        endpoint.send_signal(signal.SIGTERM)
        endpoint.wait(10)
    ratio = rate / naive
    per_process = rate / args.processes
    small = args.batch <= SMALL_BATCH
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"parser:  {rate:,.0f} records/s = {rate / args.batch:,.0f} messages/s of {args.batch} "
          f"with {args.processes} process(es); {per_process:,.0f} records/s per process"
          + ("" if small else f" (target >= {TARGET_RATE:,})"))
    print(f"naive:   {naive:,.0f} records/s")
    print(f"floor:   {floor:,.0f} messages/s through aiormq alone, {lean:,.0f} through the "
          f"parser's own consumer alone; the parser reached {rate / args.batch / lean:.0%} "
          "of the latter")
    print(f"broker:  {broker:,.0f} messages/s to a consumer without an AMQP library; aiormq "
          f"reached {floor / broker:.0%} of it, the parser's consumer {lean / broker:.0%}")
    print(f"ratio:   {ratio:.1f}x (target >= {TARGET_RATIO}x)")
    if small:
        messages = per_process / args.batch
        print(f"small:   {messages:,.0f} messages/s per process (target >= {TARGET_MESSAGES:,} "
              f"for messages of at most {SMALL_BATCH} records)")
        ok = messages >= TARGET_MESSAGES and ratio >= TARGET_RATIO
    else:
        ok = per_process >= TARGET_RATE and ratio >= TARGET_RATIO
    print("result:  " + ("targets met" if ok else "TARGETS MISSED"))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500, help="records per AMQP message")
    parser.add_argument("--naive", type=int, default=3000, help="records for the naive baseline")
    parser.add_argument("--prefetch", type=int, default=0,
                        help="the parser's --prefetch (default: the parser's own default)")
    parser.add_argument("--bulk-size", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=1, help="parser processes on the queue")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--amqp-url", default=os.environ.get(
        "SLUICE_AMQP_URL", "amqp://guest:guest@localhost:5672/"))
    parser.add_argument("--endpoint", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.endpoint:
        serve_endpoint()
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
