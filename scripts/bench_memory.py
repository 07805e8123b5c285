#!/usr/bin/env python3
"""Benchmark: the server's memory under a flood it cannot forward.

1. Starts a private RabbitMQ node (its own ports and data directory; needs
   ``rabbitmq-server`` installed) and one ``sluice server`` process on it with
   ``--max-inflight-bytes BUDGET`` and ``--max-frame`` 4 MiB.
2. Measures the server's idle RSS, then puts the broker under a memory alarm
   (``set_vm_memory_high_watermark 0``): RabbitMQ stops reading from publishers, so no
   confirm ever arrives.
3. Opens ``--connections`` (200) connections; each says hello and then offers
   maximum-size batch frames for ``--seconds``, as fast as the server takes them (one
   frame written at a time, so this process holds little).
4. Prints the budget, the stated overhead and the server's peak RSS (``VmHWM``), and exits 0
   when the peak stays under budget + overhead.

The stated overhead is what the server needs besides the batches it holds: its idle RSS,
the stream reader buffers of every connection (128 KiB each at most), and one more budget
for the copies made while batches are framed for AMQP and written to the blocked socket.
Without the budget (``--max-inflight-bytes`` huge) the same flood would hold up to 65
frames of 4 MiB per connection: 52 GiB for 200 connections, which is why no baseline is
run here.

    PYTHONPATH=src python scripts/bench_memory.py [--connections 200] [--budget-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid

from prometheus_client.parser import text_string_to_metric_families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, ROOT)

from tests.support.rabbitmq import PrivateBroker, free_port, private_broker  # noqa: E402

from sluice.protocol import DEFAULT_MAX_FRAME, encode, encode_batch  # noqa: E402

MIB = 1 << 20
READER_BUFFERS = 128 * 1024  # per connection: the stream reader pauses past 2 x 64 KiB
#: frames are written in pieces of this size, each drained: at most one piece per
#: connection waits in this process
CHUNK = 1024 * 1024


def server_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    # Unlabelled samples only: the ones this benchmark prints.
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("sluice_server_") and not s.labels}


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


async def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def flood(port: int, index: int, frame_body: bytes, until: float, sent: list[int]) -> None:
    """One connection offering maximum-size batches until ``until`` (loop time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode({"type": "hello", "version": 1, "client_id": f"bench-{index}"}))
        await asyncio.wait_for(reader.readexactly(4), 60)
        loop = asyncio.get_running_loop()
        seq = 0
        while loop.time() < until:
            frame = memoryview(encode_batch(seq, "measurement", 1, frame_body))
            # in pieces, each drained: a stalled server leaves at most a piece buffered here
            for start in range(0, len(frame), CHUNK):
                writer.write(frame[start:start + CHUNK])
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(writer.drain(), remaining)
            else:
                seq += 1
        sent[index] = seq
    finally:
        writer.transport.abort()


async def run(args: argparse.Namespace, broker: PrivateBroker) -> int:
    budget = args.budget_mib * MIB
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.path.join(ROOT, "src")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sluice", "server", "--host", "127.0.0.1", "--port", str(port),
        "--http-port", str(http_port), "--amqp-url", broker.url,
        "--namespace", f"bench{uuid.uuid4().hex[:8]}",
        "--max-frame", str(DEFAULT_MAX_FRAME), "--max-inflight-bytes", str(budget),
        "--max-connections", str(args.connections + 10), "--log-level", "warning",
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await wait_port(port)
        await asyncio.sleep(2)  # the broker link and the first allocations settle
        idle_kib = status_kib(server.pid, "VmRSS")
        await asyncio.to_thread(broker.ctl, "set_vm_memory_high_watermark", "0")
        # the largest payload whose batch frame still fits max_frame
        body = b"\x00" * (DEFAULT_MAX_FRAME - 64)
        loop = asyncio.get_running_loop()
        until = loop.time() + args.seconds
        sent = [0] * args.connections
        await asyncio.gather(*(flood(port, i, body, until, sent)
                               for i in range(args.connections)))
        peak_kib = status_kib(server.pid, "VmHWM")
        metrics = await asyncio.to_thread(server_metrics, http_port)
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 30)
        except asyncio.TimeoutError:
            server.kill()
            await server.wait()
        await asyncio.to_thread(broker.ctl, "set_vm_memory_high_watermark", "0.4")
    overhead = idle_kib * 1024 + args.connections * READER_BUFFERS + budget
    peak = peak_kib * 1024
    offered = sum(sent) * DEFAULT_MAX_FRAME
    print(f"connections                 {args.connections}, each offering {DEFAULT_MAX_FRAME} "
          f"byte frames for {args.seconds:g} s against a broker under a memory alarm")
    print(f"whole frames written (into kernel buffers or read by the server): {sum(sent)} "
          f"= {offered / MIB:.0f} MiB")
    print(f"server side: {metrics.get('sluice_server_batches_total', 0):.0f} batches read, "
          f"{metrics.get('sluice_server_inflight_bytes', 0) / MIB:.1f} MiB held, "
          f"{metrics.get('sluice_server_budget_waiting', 0):.0f} connections waiting for "
          "the budget")
    print(f"budget (--max-inflight-bytes) {budget / MIB:.1f} MiB")
    print(f"stated overhead              {overhead / MIB:.1f} MiB = idle RSS "
          f"{idle_kib / 1024:.1f} MiB + {args.connections} x 128 KiB reader buffers + one "
          "budget of AMQP framing copies")
    print(f"limit = budget + overhead    {(budget + overhead) / MIB:.1f} MiB")
    print(f"server peak RSS (VmHWM)      {peak / MIB:.1f} MiB "
          f"({peak / (budget + overhead):.2f} of the limit)")
    ok = peak < budget + overhead
    print("OK: under the limit" if ok else "FAIL: over the limit")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        sys.exit("bench_memory needs rabbitmq-server: apt-get install rabbitmq-server")
    with private_broker("sluicebench", startup_timeout=180) as broker:
        return asyncio.run(run(args, broker))


if __name__ == "__main__":
    sys.exit(main())
