"""Shared test fixtures. Provisioning lives in ``tests/support``; every service a test needs
is real (RabbitMQ, nginx, Chromium, Docker) or, for Elasticsearch, the stand-in described in
``tests/support/elasticsearch.py`` unless ``SLUICE_ES_URL`` names a real cluster."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "src") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "src"))

pytest_plugins = [
    "tests.support.rabbitmq",
    "tests.support.nginx",
    "tests.support.elasticsearch",
    "tests.support.api",
    "tests.support.browser",
    "tests.support.locks",
]
