#!/usr/bin/env python3
"""Benchmark: records/s from ``sluice client`` to confirmed-in-RabbitMQ through one
``sluice server``, and a naive baseline.

1. Starts one ``sluice server`` process on a fresh namespace (its own exchange and quorum
   queue on the broker at ``SLUICE_AMQP_URL``, default localhost).
2. Runs ``sluice client`` as a process, ``--runs`` times: ``--records`` generated records in
   ``--batch``-record batches over ``--connections`` connections. The rate of a run is the
   client's acked records / elapsed: a record counts only once the server has acked its
   batch, which it does only after RabbitMQ confirmed it. After each run the queue must
   hold exactly the batches sent; it is purged before the next run.
3. The naive baseline, in this process: one record per AMQP message, each published with
   a publisher confirm, ``--naive-inflight`` outstanding at a time (aiormq directly, bodies
   built in advance), into a quorum queue declared like the real one.

Prints both rates and their ratio. Targets: >= 250,000 records/s and >= 30x the baseline.
Exit status 0 when both are met. The namespaces' queues and exchanges are deleted at the end.

With ``--tls`` the baseline is plain-text sluice instead: a second server (its own
namespace) serves TLS and requires a token (certificates from ``scripts/make-certs.sh``,
a token file from ``sluice.auth``), and plain and TLS client runs alternate, so both see
the same machine. Prints both medians and their ratio; target: TLS >= 70 % of plain.

    PYTHONPATH=src python scripts/bench_ingest.py [--records 1000000] [--connections 4] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

import aiohttp  # noqa: E402
import aiormq  # noqa: E402
import msgpack  # noqa: E402
from benchlib import delete_topology, free_port, queue_depth, read_text  # noqa: E402

from sluice.client.sources import MeasurementGenerator  # noqa: E402
from sluice.topology import Topology  # noqa: E402

TARGET_RATE = 250_000
TARGET_RATIO = 30
TARGET_TLS_SHARE = 0.70
KIND = "measurement"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")}
    out.update(extra)
    return out


# -- the real path -----------------------------------------------------------------------------


def spawn_server(url: str, namespace: str, log_path: str, port: int,
                 http_port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sluice", "server", "--host", "127.0.0.1", "--port", str(port),
             "--http-port", str(http_port), "--log-level", "warning", *extra],
            env=env(SLUICE_AMQP_URL=url, SLUICE_NAMESPACE=namespace), stdout=log, stderr=log,
        )


async def start_server(url: str, namespace: str, log_path: str,
                       extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    port, http_port = free_port(), free_port()
    server = spawn_server(url, namespace, log_path, port, http_port, extra)
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if server.poll() is not None:
                raise SystemExit(f"server exited:\n{read_text(log_path)}")
            try:
                async with session.get(f"http://127.0.0.1:{http_port}/readyz") as response:
                    if response.status == 200:
                        return server, port
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    server.kill()
    raise SystemExit(f"server never became ready:\n{read_text(log_path)}")


async def run_client(port: int, args: argparse.Namespace, run: int,
                     extra: tuple[str, ...] = (), **environ: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "client", "--target", f"127.0.0.1:{port}", "--json",
        "--count", str(args.records), "--batch-size", str(args.batch),
        "--connections", str(args.connections), "--seed", str(run), "--log-level", "warning",
        *extra, env=env(**environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"client failed ({process.returncode}):\n{out.decode()}\n{err.decode()[-3000:]}")
    summary: dict[str, Any] = json.loads(out)
    return summary


async def purge(url: str, queue: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_purge(queue)
    finally:
        await connection.close()


# -- the naive baseline ------------------------------------------------------------------------


async def naive(url: str, namespace: str, count: int, inflight: int) -> float:
    topology = Topology(namespace=namespace)
    payload = MeasurementGenerator(0, "naive", 100).payload(count, int(time.time() * 1000))
    bodies = [msgpack.packb(r, use_bin_type=True) for r in msgpack.unpackb(payload, raw=False)]
    properties = aiormq.spec.Basic.Properties(
        delivery_mode=2, content_type="application/msgpack"
    )
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel, [KIND])
        window = asyncio.Semaphore(inflight)

        async def publish(body: bytes) -> None:
            async with window:
                confirm = await channel.basic_publish(
                    body, exchange=topology.exchange, routing_key=topology.routing_key(KIND),
                    properties=properties, mandatory=True,
                )
                if not isinstance(confirm, aiormq.spec.Basic.Ack):
                    raise SystemExit(f"baseline publish not confirmed: {confirm!r}")

        started = time.perf_counter()
        await asyncio.gather(*(publish(body) for body in bodies))
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    depth = await queue_depth(url, topology.raw_queue(KIND))
    if depth != count:
        raise SystemExit(f"baseline queue holds {depth} messages, expected {count}")
    return count / elapsed


async def delete_namespace(url: str, namespace: str) -> None:
    await delete_topology(url, Topology(namespace=namespace), [KIND])


# -- TLS against plain --------------------------------------------------------------------------


def make_tls_files(directory: str) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """Server flags, client flags and client environment for TLS with a token."""
    from sluice.auth import hash_token, new_token

    subprocess.run([os.path.join(ROOT, "scripts", "make-certs.sh"), directory, "server"], check=True)
    token = new_token()
    tokens = os.path.join(directory, "tokens")
    with open(tokens, "w") as fh:
        fh.write(f"bench {hash_token(token)} ingest:{KIND}\n")
    token_path = os.path.join(directory, "client.token")
    with open(token_path, "w") as fh:
        fh.write(token)
    server = ("--tls-cert", os.path.join(directory, "server.pem"),
              "--tls-key", os.path.join(directory, "server.key"), "--token-file", tokens)
    client = ("--ca-file", os.path.join(directory, "ca.pem"), "--server-name", "server")
    return server, client, {"SLUICE_TOKEN_FILE": token_path}


async def measured_run(url: str, queue: str, port: int, args: argparse.Namespace, run: int,
                       label: str, extra: tuple[str, ...] = (), **environ: str) -> float:
    summary = await run_client(port, args, run, extra, **environ)
    expected = -(-args.records // args.batch)
    depth = await queue_depth(url, queue)
    if summary["acked"] != args.records or depth != expected:
        raise SystemExit(f"{label} run {run}: acked {summary['acked']}, queue holds {depth} "
                         f"messages, expected {args.records} records in {expected}")
    print(f"  {label:>5} run {run}: {summary['records_per_s']:>12,.0f} records/s  "
          f"({summary['elapsed']:.2f} s, ack latency p50 {summary['ack_latency_p50_ms']:.1f} ms)")
    await purge(url, queue)
    rate: float = summary["records_per_s"]
    return rate


async def bench_tls(args: argparse.Namespace) -> int:
    url = os.environ.get("SLUICE_AMQP_URL", DEFAULT_URL)
    run_id = uuid.uuid4().hex[:10]
    plain_ns, tls_ns = f"benchplain{run_id}", f"benchtls{run_id}"
    rates: dict[str, list[float]] = {"plain": [], "tls": []}
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-tls-") as directory:
        server_flags, client_flags, client_env = make_tls_files(directory)
        try:
            plain, plain_port = await start_server(url, plain_ns, os.path.join(directory, "plain.log"))
            servers.append(plain)
            secure, tls_port = await start_server(url, tls_ns, os.path.join(directory, "tls.log"),
                                                  server_flags)
            servers.append(secure)
            print(f"sluice plain vs TLS + token: {args.records:,} records per run in {args.batch}-record "
                  f"batches, {args.connections} connections, one server each, {os.cpu_count()} cores")
            for run in range(1, args.runs + 1):
                rates["plain"].append(await measured_run(
                    url, Topology(plain_ns).raw_queue(KIND), plain_port, args, run, "plain"))
                rates["tls"].append(await measured_run(
                    url, Topology(tls_ns).raw_queue(KIND), tls_port, args, run, "tls",
                    client_flags, **client_env))
        finally:
            for server in servers:
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
                    server.wait(30)
            for namespace in (plain_ns, tls_ns):
                await delete_namespace(url, namespace)
    plain_rate, tls_rate = statistics.median(rates["plain"]), statistics.median(rates["tls"])
    share = tls_rate / plain_rate
    print()
    print(f"plain (median of {args.runs} runs): {plain_rate:>12,.0f} records/s")
    print(f"TLS   (median of {args.runs} runs): {tls_rate:>12,.0f} records/s")
    print(f"TLS / plain:                {share:>12.1%}")
    print(f"target TLS >= {TARGET_TLS_SHARE:.0%} of plain: {'met' if share >= TARGET_TLS_SHARE else 'MISSED'}")
    return 0 if share >= TARGET_TLS_SHARE else 1


# -- main --------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    url = os.environ.get("SLUICE_AMQP_URL", DEFAULT_URL)
    run_id = uuid.uuid4().hex[:10]
    sluice_ns, naive_ns = f"bench{run_id}", f"benchnaive{run_id}"
    queue = Topology(namespace=sluice_ns).raw_queue(KIND)
    log_path = os.path.join(tempfile.gettempdir(), f"sluice-bench-server-{run_id}.log")
    rates: list[float] = []
    server = None
    try:
        server, port = await start_server(url, sluice_ns, log_path)
        print(f"sluice: {args.records:,} records per run in {args.batch}-record batches, "
              f"{args.connections} connections, one server, quorum queue, {os.cpu_count()} cores")
        for run in range(1, args.runs + 1):
            summary = await run_client(port, args, run)
            expected = -(-args.records // args.batch)
            depth = await queue_depth(url, queue)
            if summary["acked"] != args.records or depth != expected:
                raise SystemExit(f"run {run}: acked {summary['acked']}, queue holds {depth} "
                                 f"messages, expected {args.records} records in {expected}")
            rates.append(summary["records_per_s"])
            print(f"  run {run}: {summary['records_per_s']:>12,.0f} records/s  "
                  f"({summary['elapsed']:.2f} s, ack latency p50 {summary['ack_latency_p50_ms']:.1f} ms"
                  f" p99 {summary['ack_latency_p99_ms']:.1f} ms, {depth} messages in the queue)")
            await purge(url, queue)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        rate = statistics.median(rates)
        print(f"naive: {args.naive:,} records, one per message, each confirmed, "
              f"{args.naive_inflight} in flight")
        baseline = await naive(url, naive_ns, args.naive, args.naive_inflight)
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(30)
        for namespace in (sluice_ns, naive_ns):
            await delete_namespace(url, namespace)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log_path)
    ratio = rate / baseline
    rate_ok, ratio_ok = rate >= TARGET_RATE, ratio >= TARGET_RATIO
    print()
    print(f"sluice (median of {len(rates)} runs): {rate:>12,.0f} records/s")
    print(f"naive baseline:              {baseline:>12,.0f} records/s")
    print(f"ratio:                       {ratio:>12,.1f}x")
    print(f"target >= {TARGET_RATE:,} records/s: {'met' if rate_ok else 'MISSED'}; "
          f"target >= {TARGET_RATIO}x naive: {'met' if ratio_ok else 'MISSED'}")
    return 0 if rate_ok and ratio_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records per client run")
    parser.add_argument("--batch", type=int, default=500, help="records per batch")
    parser.add_argument("--connections", type=int, default=4, help="client connections")
    parser.add_argument("--runs", type=int, default=3, help="client runs (the median is reported)")
    parser.add_argument("--naive", type=int, default=20_000, help="records for the baseline")
    parser.add_argument("--naive-inflight", type=int, default=200,
                        help="unconfirmed publishes the baseline keeps outstanding")
    parser.add_argument("--tls", action="store_true",
                        help="compare TLS with a token against plain text instead of the naive baseline")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(bench_tls(args) if args.tls else bench(args))


if __name__ == "__main__":
    sys.exit(main())
