"""Shared test fixtures. Provisioning lives in ``tests/support``; every service a test needs
is real (RabbitMQ, nginx, Chromium, Docker) or, for Elasticsearch, the stand-in described in
``tests/support/elasticsearch.py`` unless ``SLUICE_ES_URL`` names a real cluster."""

from __future__ import annotations

import os
import sys

from hypothesis import HealthCheck, settings

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

# The test machines are shared and loaded: a process can stall for seconds. Hypothesis's
# per-example deadline (200 ms) and its "too slow" health check would then fail a property
# on the machine's load, not on the code, so neither applies; a property still fails on any
# counterexample. HYPOTHESIS_PROFILE=default restores Hypothesis's own settings.
settings.register_profile("sluice", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sluice"))
