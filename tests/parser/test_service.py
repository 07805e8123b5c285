"""``ParserService``: the parser's one object, with its ops port on the configured host,
Elasticsearch probed before anything is consumed, and a clean close at any point."""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from sluice.parser.main import add_arguments, build_chains
from sluice.parser.service import ParserService
from sluice.parser.settings import ParserSettings
from sluice.settings import load


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


async def test_ops_port_on_the_configured_host_and_not_ready_without_elasticsearch() -> None:
    # Elasticsearch unreachable: the service waits for it to install the index template,
    # consumes nothing (no broker needed), and says so on /readyz.
    settings = ParserSettings(host="127.0.0.1", http_port=0, es_url="http://127.0.0.1:1",
                              amqp_url="amqp://guest:guest@127.0.0.1:1/")
    service = ParserService(settings, build_chains(settings.parsers, settings.kinds, {}))
    try:
        await service.start()
        assert service.ops.bound_port
        base = f"http://127.0.0.1:{service.ops.bound_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as resp:
                assert (resp.status, await resp.json()) == (200, {"status": "ok"})
            async with session.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                body = await resp.json()
            assert body == {"ready": False,
                            "checks": {"broker": False, "elasticsearch": False, "indexing": True}}
            async with session.get(f"{base}/metrics") as resp:
                assert "sluice_parser_elasticsearch_up 0" in await resp.text()
        assert not service.failed.is_set()
        assert await service.shutdown() == {"drained": True}  # nothing was consumed
    finally:
        await asyncio.wait_for(service.close(), 30)


def test_host_is_a_setting() -> None:
    assert load(ParserSettings, parse(["--host", "127.0.0.1"]), environ={}).host == "127.0.0.1"
    assert load(ParserSettings, parse([]), environ={"SLUICE_HOST": "::1"}).host == "::1"
    assert load(ParserSettings, parse([]), environ={}).host == "0.0.0.0"
