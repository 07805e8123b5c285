#!/usr/bin/env python3
"""Benchmark: how fast one quorum queue takes confirmed publishes, against a durable classic
queue on the same broker in the same run as the baseline.

One quorum queue has one Raft leader, so its publish rate is bounded by one node's core and
disk whatever the cluster size; this is the figure docs/scaling.md uses to say when a record
kind needs more than one queue. Publishes go as sluice's servers send them: persistent
messages of ``--records`` msgpack measurement records each, publisher confirms, ``--inflight``
outstanding, one connection. Each queue is declared fresh (unique name), filled with
``--messages`` messages, and deleted. Run it against a cluster to include replication:

    PYTHONPATH=src python scripts/bench_quorum.py --url amqp://guest:guest@localhost:5672/
    docker run --rm --network STACK_backend -v "$PWD/scripts:/bench:ro" IMAGE \\
        python /bench/bench_quorum.py --url amqp://sluice:PASSWORD@rabbitmq1:5672/
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

import aiormq
import msgpack

#: a measurement record like the client's generator makes (about 130 bytes packed)
RECORD = {
    "id": "0f8fad5b-d9cb-469f-a165-70867728950e-000000000001", "sensor": "sensor-00042",
    "metric": "temperature", "unit": "C", "tags": {"site": "site-2"}, "value": 21.5,
    "ts": 1_764_400_000_000,
}


async def publish_rate(url: str, arguments: dict[str, object], body: bytes, messages: int,
                       inflight: int) -> float:
    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        queue = f"bench.{uuid.uuid4().hex[:10]}"
        await channel.queue_declare(queue, durable=True, arguments=arguments)
        try:
            window = asyncio.Semaphore(inflight)
            props = aiormq.spec.Basic.Properties(delivery_mode=2)

            async def one() -> None:
                async with window:
                    await channel.basic_publish(body, routing_key=queue, properties=props)

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(messages)))
            elapsed = time.perf_counter() - start
        finally:
            await channel.queue_delete(queue)
        return messages / elapsed
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> int:
    body = msgpack.packb([RECORD] * args.records)
    print(f"broker {args.url.split('@')[-1]}; {args.messages} messages of {args.records} records "
          f"({len(body)} bytes) each, {args.inflight} in flight, publisher confirms")
    classic = await publish_rate(args.url, {}, body, args.messages, args.inflight)
    quorum = await publish_rate(args.url, {"x-queue-type": "quorum"}, body, args.messages, args.inflight)
    for name, rate in (("classic durable queue (baseline)", classic), ("one quorum queue", quorum)):
        print(f"{name:34s} {rate:9,.0f} messages/s = {rate * args.records:12,.0f} records/s")
    print(f"quorum / classic: {quorum / classic:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SLUICE_AMQP_URL", "amqp://guest:guest@localhost:5672/"),
                        help="RabbitMQ URL (the first of a comma-separated list)")
    parser.add_argument("--messages", type=int, default=5000, help="messages per queue")
    parser.add_argument("--records", type=int, default=500, help="records per message")
    parser.add_argument("--inflight", type=int, default=200, help="unconfirmed publishes at a time")
    args = parser.parse_args()
    args.url = args.url.split(",")[0].strip()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
