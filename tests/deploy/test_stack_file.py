"""The swarm stack files (deploy/swarm), read as YAML: the operating rules an operator relies
on hold for every service, without a Docker engine. The stack itself runs in test_swarm.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from .kustomize import ROOT

SWARM = os.path.join(ROOT, "deploy", "swarm")
STATEFUL = ("rabbitmq1", "rabbitmq2", "rabbitmq3", "elasticsearch")
SLUICE = ("server", "parser", "api")


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(SWARM, name), encoding="utf-8") as fh:
        doc: dict[str, Any] = yaml.safe_load(fh)
    return doc


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return load("stack.yml")


def test_every_service_is_replicated_updated_restarted_and_limited(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        deploy = service["deploy"]
        assert deploy["endpoint_mode"] == "dnsrr", (name, "no IPVS here: VIPs do not route")
        assert deploy["update_config"]["order"] in {"start-first", "stop-first"}, name
        assert deploy["restart_policy"]["condition"] == "any", name
        assert "memory" in deploy["resources"]["limits"], name
        if name != "client":
            assert "test" in service["healthcheck"], name
        if name in STATEFUL:
            # One task owns a node's data: never two at once, and always on its labelled host.
            assert deploy["update_config"]["order"] == "stop-first", name
            assert deploy["replicas"] == 1, name
            assert any(c.startswith("node.labels.") for c in deploy["placement"]["constraints"]), name
            assert any(v.endswith(":/var/lib/rabbitmq") or v.endswith(":/usr/share/elasticsearch/data")
                       for v in service["volumes"]), name
        if name in SLUICE:
            assert deploy["update_config"]["order"] == "start-first", name
            assert service["image"].startswith("${SLUICE_IMAGE:?"), name


def test_secrets_are_docker_secrets_never_environment(stack: dict[str, Any]) -> None:
    assert all(secret.get("external") for secret in stack["secrets"].values())
    for name, service in stack["services"].items():
        for key, value in (service.get("environment") or {}).items():
            text = f"{key}={value}".lower()
            assert "amqp://" not in text and "pass" not in text and "cookie" not in text, (name, key)
    for name in SLUICE:
        service = stack["services"][name]
        assert service["environment"]["SLUICE_AMQP_URL_FILE"] == "/run/secrets/amqp_url"
        assert service["secrets"] == ["amqp_url"]
    for name in ("rabbitmq1", "rabbitmq2", "rabbitmq3"):
        assert set(stack["services"][name]["secrets"]) == {"rabbitmq_erlang_cookie", "rabbitmq_password"}


def test_rabbitmq_nodes_match_the_cluster_config(stack: dict[str, Any]) -> None:
    with open(os.path.join(ROOT, "config", "rabbitmq", "cluster.conf"), encoding="utf-8") as fh:
        listed = sorted(line.split("=", 1)[1].strip() for line in fh
                        if line.startswith("cluster_formation.classic_config.nodes."))
    nodes = sorted(s["environment"]["RABBITMQ_NODENAME"] for n, s in stack["services"].items()
                   if n.startswith("rabbitmq"))
    assert listed == nodes == ["rabbit@rabbitmq1", "rabbit@rabbitmq2", "rabbit@rabbitmq3"]
    for name in ("rabbitmq1", "rabbitmq2", "rabbitmq3"):
        assert stack["services"][name]["hostname"] == name


@pytest.mark.parametrize("name", ["routing-mesh.yml", "elasticsearch-cluster.yml"])
def test_variants_only_name_services_of_the_stack_or_new_ones(stack: dict[str, Any], name: str) -> None:
    variant = load(name)
    assert variant["version"] == stack["version"]
    for service, spec in variant["services"].items():
        if service not in stack["services"]:
            assert "image" in spec and spec["deploy"]["placement"]["constraints"], service
