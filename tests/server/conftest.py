"""Fixtures for server tests: an in-process server on ephemeral ports, per test namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, Callable

import pytest

from sluice.server.app import IngestServer
from sluice.server.settings import ServerSettings

from ..support.rabbitmq import TEST_KINDS, wait_link_up

StartServer = Callable[..., Awaitable[IngestServer]]


def server_settings(**overrides: Any) -> ServerSettings:
    """Test defaults: loopback, ephemeral ports, the test kinds; ``overrides`` win."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "http_port": 0,
                              "kinds": TEST_KINDS, "instance_id": "test-server"}
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture
async def start_server(amqp_url: str, namespace: str) -> AsyncIterator[StartServer]:
    """``await start_server(**settings)``: a started server whose broker link is up."""
    servers: list[IngestServer] = []

    async def start(wait_up: bool = True, **overrides: Any) -> IngestServer:
        overrides.setdefault("amqp_url", amqp_url)
        server = IngestServer(server_settings(namespace=namespace, **overrides))
        servers.append(server)
        await server.start()
        if wait_up:
            assert await wait_link_up(server.link, 30), "the server did not reach RabbitMQ"
        return server

    yield start
    for server in servers:
        await server.close()
