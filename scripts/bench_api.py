#!/usr/bin/env python3
"""Benchmark: what ``sluice api`` adds on top of the store it queries.

1. Uses ``--es-url`` (or ``SLUICE_ES_URL``); without one, starts a private osmem-server
   (the in-memory stand-in the tests use) behind the header-rewriting proxy.
2. Indexes ``--docs`` measurements under a fresh index prefix, then starts one
   ``sluice api`` process on it.
3. For ``/api/v1/stats`` and ``/api/v1/sensors``, sends ``--requests`` requests with
   ``--concurrency`` in flight straight to the store (the very search body the API
   builds, to the same URL the API uses) and as many through the API, alternating in
   ``--rounds`` rounds; requests/s, p50 and p99 of each.
4. Prints the API's overhead at p50 as a ratio: ``api_p50 / store_p50 - 1``.
   Target: under 20 %.

    PYTHONPATH=src python scripts/bench_api.py [--docs 5000] [--requests 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

import aiohttp  # noqa: E402

from sluice.api import queries  # noqa: E402
from sluice.api.params import Filters  # noqa: E402
from sluice.es import index_pattern  # noqa: E402

TARGET_OVERHEAD = 0.20


@dataclass
class Result:
    name: str
    latencies: list[float]
    elapsed: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def load(name: str, n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> Result:
    latencies: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, latencies, time.perf_counter() - started)


class Store:
    """A private osmem-server behind the proxy, unless a URL was given."""

    def __init__(self, url: Optional[str]) -> None:
        self.url = url
        self._osmem: Any = None
        self._proxy: Any = None

    def __enter__(self) -> Store:
        if self.url:
            return self
        from tests.support.elasticsearch import _find_osmem, _Osmem

        binary = _find_osmem()
        if binary is None:
            raise SystemExit("no Elasticsearch: pass --es-url or pip install osmem-server")
        log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-api-osmem-{os.getpid()}.log")
        from pathlib import Path

        self._osmem = _Osmem(binary, Path(log))
        # The proxy in a process of its own: in a thread here it would share the GIL with
        # the load generator and tilt the comparison.
        self._proxy = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "support", "es_proxy.py"),
             "--listen", "127.0.0.1:0", "--upstream", self._osmem.url],
            stdout=subprocess.PIPE, text=True,
        )
        assert self._proxy.stdout is not None
        self.url = json.loads(self._proxy.stdout.readline())["url"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proxy is not None:
            self._proxy.terminate()
            self._proxy.wait(10)
            if self._proxy.stdout is not None:
                self._proxy.stdout.close()
        if self._osmem is not None:
            self._osmem.stop()


def start_api(es_url: str, prefix: str) -> tuple[subprocess.Popen[str], str]:
    from tests.support.api import start_api_process

    proc = start_api_process(es_url, prefix)
    return proc.process, proc.url


async def drop_indices(es_url: str, prefix: str) -> None:
    # Real clusters refuse wildcard deletes by default: resolve the names first.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{es_url}/{prefix}-*?allow_no_indices=true") as r:
            names = sorted(await r.json(content_type=None)) if r.status == 200 else []
        if names:
            async with session.delete(f"{es_url}/{','.join(names)}") as r:
                await r.read()
        async with session.delete(f"{es_url}/_index_template/{prefix}") as r:
            await r.read()


async def bench(args: argparse.Namespace, es_url: str) -> int:
    from tests.support.api import index_documents, make_measurements

    prefix = "bench" + uuid.uuid4().hex[:8]
    docs = make_measurements(args.docs, seed=1, sensors=args.sensors, span_ms=24 * 3_600_000)
    t0 = time.perf_counter()
    await index_documents(es_url, prefix, docs)
    print(f"indexed {len(docs)} documents ({args.sensors} sensors) in {time.perf_counter() - t0:.1f} s "
          f"into {prefix}-measurement-*")
    proc, api_url = start_api(es_url, prefix)
    index = index_pattern(prefix, "measurement")
    search_url = f"{es_url}/{index}/_search?ignore_unavailable=true&allow_no_indices=true"
    everything = Filters()
    cases = [
        ("stats", "/api/v1/stats", queries.stats_body(everything)),
        ("sensors", "/api/v1/sensors", queries.sensors_body(everything, 20, "count:desc", False)),
    ]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    results: list[tuple[Result, Result]] = []
    try:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def direct_call(body: bytes) -> None:
                async with session.post(search_url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    assert r.status == 200, r.status

            async def api_call(path: str) -> None:
                async with session.get(api_url + path) as r:
                    await r.read()
                    assert r.status == 200, r.status

            for name, path, body_dict in cases:
                body = json.dumps(body_dict).encode()
                # Warm both paths (connections, caches) before measuring.
                for _ in range(args.concurrency):
                    await direct_call(body)
                    await api_call(path)
                # Alternate short rounds, so drift in the store (its caches, its garbage
                # collector, the machine) weighs on both sides alike.
                direct = Result(f"store {name}", [], 0.0)
                via_api = Result(f"api {path}", [], 0.0)
                per_round = max(1, args.requests // args.rounds)
                for _ in range(args.rounds):
                    sides = ((direct, lambda b=body: direct_call(b)), (via_api, lambda p=path: api_call(p)))
                    for target, call in sides:
                        r = await load(target.name, per_round, args.concurrency, call)
                        target.latencies.extend(r.latencies)
                        target.elapsed += r.elapsed
                results.append((direct, via_api))
    finally:
        proc.terminate()
        proc.wait(10)
        await drop_indices(es_url, prefix)

    print(f"\n{args.requests} requests each, {args.concurrency} in flight, {args.rounds} alternating rounds, "
          f"{args.docs} documents\n")
    header = f"{'target':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for direct, via_api in results:
        for r in (direct, via_api):
            print(f"{r.name:<26}{r.rps:>10.1f}{r.pct(50) * 1000:>10.2f}{r.pct(99) * 1000:>10.2f}")
        overhead = via_api.pct(50) / direct.pct(50) - 1
        worst = max(worst, overhead)
        added = (via_api.pct(50) - direct.pct(50)) * 1000
        print(f"{'  API overhead at p50':<26}{overhead * 100:>9.1f}%  ({added:+.2f} ms; "
              f"mean {statistics.fmean(via_api.latencies) * 1000:.2f} vs "
              f"{statistics.fmean(direct.latencies) * 1000:.2f} ms)\n")
    verdict = "OK" if worst < TARGET_OVERHEAD else "ABOVE TARGET"
    print(f"largest overhead at p50: {worst * 100:.1f}% (target < {TARGET_OVERHEAD * 100:.0f}%): {verdict}")
    return 0 if worst < TARGET_OVERHEAD else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--es-url", default=os.environ.get("SLUICE_ES_URL", ""),
                        help="Elasticsearch to use (default: a private osmem-server)")
    parser.add_argument("--docs", type=int, default=5_000)
    parser.add_argument("--sensors", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10, help="alternations of store and API runs")
    args = parser.parse_args()
    with Store(args.es_url or None) as store:
        assert store.url is not None
        return asyncio.run(bench(args, store.url))


if __name__ == "__main__":
    sys.exit(main())
