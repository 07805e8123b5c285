"""``sluice deadletters list | show | replay``: what is in the dead-letter queues, and a
way back into the pipeline once the cause is fixed.

- ``list``: letters per kind and reason (it reads each letter, so ``--limit`` bounds the
  work on a very long queue; the queue's depth is always shown);
- ``show``: sample letters with their reason, error and origin, and their records;
- ``replay --kind K [--reason R] [--limit N]``: the records go back to the ingest exchange
  with publisher confirms; each letter leaves the queue only after its confirm. Records
  keep their ids, so one that was stored in the meantime is not stored twice.

Nothing is lost or reordered for good: see :mod:`sluice.deadletters.queue`.
Exit status: 0, 1 when RabbitMQ is unreachable or a replay was refused (the letters it
concerned are still queued), 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import asdict
from typing import Any, Optional

import aiormq

from ..errors import BrokerUnavailable, ConfigError
from ..logs import configure_logging
from ..settings import add_arguments as add_settings_arguments
from ..settings import load
from ..topology import Topology
from .queue import DeadLetterQueue, Letter
from .settings import DeadLetterSettings

__all__ = ["HELP", "add_arguments", "main"]

HELP = (
    "Inspect the dead-letter queues (list, show) and replay dead-lettered records into "
    "the pipeline once their cause is fixed (replay)."
)

_ACTIONS = {
    "list": "count the letters of each kind by reason",
    "show": "print sample letters with their reason, error, origin and records",
    "replay": "republish the records of a kind's letters to the ingest exchange (confirmed; "
              "each letter is removed only after its confirm)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Connection settings are flags of each action and SLUICE_* environment variables "
        "(SLUICE_AMQP_URL, SLUICE_NAMESPACE); see `sluice deadletters list --help`."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, text in _ACTIONS.items():
        sub = actions.add_parser(name, help=text, description=text)
        add_settings_arguments(sub, DeadLetterSettings)
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "list":
            sub.add_argument("--limit", type=int, default=10_000,
                             help="read at most this many letters per kind (0 = all) [10000]")
            continue
        sub.add_argument("--kind", help="the record kind (default: each of --kinds)",
                         required=name == "replay")
        sub.add_argument("--reason", help="only letters with this reason")
        default = 10 if name == "show" else 0
        sub.add_argument("--limit", type=int, default=default,
                         help=f"at most this many letters (0 = all) [{default}]")
        if name == "replay":
            sub.add_argument("--batch", type=int, default=500,
                             help="records per republished message [500]")


def main(args: argparse.Namespace) -> int:
    settings = load(DeadLetterSettings, args)
    if args.limit < 0 or getattr(args, "batch", 1) < 1:
        raise ConfigError("--limit cannot be negative and --batch must be at least 1")
    kinds = (args.kind,) if getattr(args, "kind", None) else settings.kinds
    configure_logging("deadletters", settings.instance_id, settings.log_level)
    topology = Topology(settings.namespace, delivery_limit=settings.delivery_limit,
                        max_length_bytes=settings.queue_max_bytes)
    try:
        return asyncio.run(_run(args, settings.amqp_url, topology, kinds))
    except (BrokerUnavailable, aiormq.exceptions.AMQPError, ConnectionError) as exc:
        # Letters taken but not yet answered go back to their queue with the connection.
        print(f"sluice deadletters: {exc!r}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, url: str, topology: Topology, kinds: Any) -> int:
    async with DeadLetterQueue(url, topology) as queue:
        if args.action == "list":
            return _print(args, await _list(queue, kinds, args.limit), _list_text)
        if args.action == "show":
            return _print(args, await _show(queue, kinds, args.reason, args.limit), _show_text)
        report = await queue.replay(args.kind, reason=args.reason, limit=args.limit,
                                    batch=args.batch)
        _print(args, asdict(report), _replay_text)
        return 1 if report.failed else 0


async def _list(queue: DeadLetterQueue, kinds: Any, limit: int) -> list[dict[str, Any]]:
    out = []
    for kind in kinds:
        reasons: Counter[str] = Counter()

        async def count(letter: Letter, reasons: Counter[str] = reasons) -> bool:
            reasons[letter.reason] += 1
            return True

        depth = await queue.depth(kind)
        scanned = await queue.walk(kind, count, limit)
        out.append({"kind": kind, "queue": queue.topology.dead_queue(kind), "depth": depth,
                    "scanned": scanned, "by_reason": dict(reasons.most_common())})
    return out


async def _show(
    queue: DeadLetterQueue, kinds: Any, reason: Optional[str], limit: int
) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []

    async def sample(letter: Letter) -> bool:
        if reason is None or letter.reason == reason:
            samples.append(letter.summary())
        return True

    for kind in kinds:
        await queue.walk(kind, sample, until=lambda: bool(limit) and len(samples) >= limit)
    return samples


def _print(args: argparse.Namespace, result: Any, text: Any) -> int:
    if args.json:
        print(json.dumps(result, default=repr, ensure_ascii=False))
    else:
        print(text(result))
    return 0


def _list_text(result: list[dict[str, Any]]) -> str:
    lines = [f"{'KIND':<16} {'REASON':<32} LETTERS"]
    for entry in result:
        for reason, n in entry["by_reason"].items():
            lines.append(f"{entry['kind']:<16} {reason:<32} {n}")
        read = f"(read {entry['scanned']} of {entry['depth']} in {entry['queue']})"
        lines.append(f"{entry['kind']:<16} {read}")
    return "\n".join(lines)


def _show_text(result: list[dict[str, Any]]) -> str:
    if not result:
        return "no dead letters"
    blocks = []
    for n, letter in enumerate(result, 1):
        records = letter["records"]
        shown = json.dumps(records[:5], default=repr, ensure_ascii=False) if records else "-"
        more = f" (+{len(records) - 5} more)" if records and len(records) > 5 else ""
        blocks.append(
            f"[{n}] kind={letter['kind']} reason={letter['reason']} "
            f"at={letter['dead_lettered_at']} source={letter['source_message_id']} "
            f"parser={letter['parser']}\n    error: {letter['error']}\n"
            f"    records: {shown}{more}"
        )
    return "\n".join(blocks)


def _replay_text(report: dict[str, Any]) -> str:
    text = (f"replayed {report['replayed_records']} records from {report['replayed_letters']} "
            f"letters; kept {report['kept']} (other reasons), "
            f"{report['not_replayable']} not replayable (not records)")
    if report["failed"]:
        text += f"; {report['failed']} letters not replayed, still queued: {report['error']}"
    return text
