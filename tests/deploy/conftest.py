"""Fixtures of the docker end-to-end test; see ``pipeline.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.names import unique_name
from tests.support.rabbitmq import free_port

from .pipeline import INSTALL_HINT, PROJECT, Pipeline, docker_problem

__all__ = ["PROJECT"]


@pytest.fixture(scope="module")
def pipeline(request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    problem = docker_problem()
    if problem:
        pytest.fail(f"{problem}; {INSTALL_HINT}", pytrace=False)
    env = dict(os.environ)
    env.update(
        # A project of this fixture's own: runs sharing the engine never touch each other's.
        COMPOSE_PROJECT_NAME=unique_name("sluicee2e"),
        SLUICE_INGEST_PORT=str(free_port()),
        SLUICE_HTTP_PORT=str(free_port()),
        SLUICE_RABBITMQ_UI_PORT=str(free_port()),
        SLUICE_ES_PORT=str(free_port()),
        # The compose clients send a fixed number of records, report, and stay down.
        SLUICE_CLIENT_COUNT=env.get("SLUICE_E2E_COUNT", "3000"),
        SLUICE_CLIENT_RATE="1000",
        SLUICE_CLIENT_CONNECTIONS="4",
        SLUICE_CLIENT_RESTART="no",
        ES_HEAP="512m",
    )
    with Pipeline(env).deployed(request) as p:
        yield p
