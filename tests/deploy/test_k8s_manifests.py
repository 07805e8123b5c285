"""The Kubernetes manifests (deploy/k8s), rendered and checked offline: every built-in
resource validates against the Kubernetes API schemas that ``kubernetes-validate`` ships,
the operators' custom resources have the shape their CRDs require, and the workloads keep
the operating rules (probes, limits, non-root, secrets as files, disruption budgets,
selectors that select something).
"""

from __future__ import annotations

import os
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from sluice.topology import Topology

from .kustomize import K8S, Manifest, load_all, render

#: the oldest Kubernetes the manifests target (autoscaling/v2, policy/v1) and the newest known
VERSIONS = ("1.27.0", f"{kubernetes_validate.latest_version()}.0")


def base() -> list[Manifest]:
    return render(os.path.join(K8S, "base"))


def keda() -> list[Manifest]:
    directory = os.path.join(K8S, "keda")
    return [doc for name in sorted(os.listdir(directory)) for doc in load_all(os.path.join(directory, name))]


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


# The part of each operator's CRD that these manifests rely on: enough to catch a misspelt
# or misplaced field, without shipping the CRDs.
_OBJ = {"type": "object"}
CUSTOM: dict[tuple[str, str], dict[str, Any]] = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["replicas"],
            "properties": {
                "replicas": {"type": "integer", "enum": [3, 5, 7]},
                "image": {"type": "string"},
                "resources": {"type": "object", "required": ["requests", "limits"]},
                "persistence": {"type": "object", "properties": {
                    "storageClassName": {"type": "string"}, "storage": {"type": "string"}},
                    "additionalProperties": False},
                "rabbitmq": {"type": "object", "properties": {"additionalConfig": {"type": "string"}},
                             "additionalProperties": False},
                "affinity": _OBJ,
            },
        }},
    },
    ("elasticsearch.k8s.elastic.co/v1", "Elasticsearch"): {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["version", "nodeSets"],
            "properties": {
                "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
                "http": _OBJ,
                "nodeSets": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["name", "count"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "count": {"type": "integer", "minimum": 3},
                        "config": _OBJ,
                        "podTemplate": _OBJ,
                        "volumeClaimTemplates": {"type": "array"},
                    },
                }},
            },
        }},
    },
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 1},
                "maxReplicaCount": {"type": "integer"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"metadata": {"type": "object", "additionalProperties": {"type": "string"}}},
                }},
            },
        }},
    },
    ("keda.sh/v1alpha1", "TriggerAuthentication"): {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": {"type": "object", "properties": {"secretTargetRef": {
            "type": "array", "items": {"type": "object", "required": ["parameter", "name", "key"]},
        }}}},
    },
}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_validates_offline(version: str) -> None:
    """Built-in kinds against the Kubernetes schemas (strict: unknown fields fail); custom
    resources against the shape of their CRDs. A kind that is neither fails."""
    docs = base() + keda()
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        custom = CUSTOM.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            jsonschema.validate(doc, custom)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no Kubernetes schema and no custom-resource shape for {doc['apiVersion']}")


def test_a_broken_manifest_is_caught() -> None:
    """The validation above can fail: a misspelt field and a bad custom resource are refused."""
    deployment = by_kind(base(), "Deployment")["sluice-server"]
    pod_spec(deployment)["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)
    cluster = by_kind(base(), "RabbitmqCluster")["sluice-rabbitmq"]
    cluster["spec"]["replicas"] = 2  # an even number of quorum members tolerates no more loss
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, CUSTOM[("rabbitmq.com/v1beta1", "RabbitmqCluster")])


def test_the_base_renders_namespaced_labelled_and_with_a_registry_image() -> None:
    docs = base()
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == sorted([
        "Namespace", "RabbitmqCluster", "Elasticsearch", "Deployment", "Service",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress",
    ])
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sluice"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sluice", doc["metadata"]
    for deployment in by_kind(docs, "Deployment").values():
        for container in pod_spec(deployment)["containers"]:
            assert container["image"] == "registry.example.com/sluice:0.1.0"


@pytest.mark.parametrize("name", ["sluice-server", "sluice-parser", "sluice-api"])
def test_workloads_keep_the_operating_rules(name: str) -> None:
    docs = base()
    deployment = by_kind(docs, "Deployment")[name]
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's user
    assert spec["automountServiceAccountToken"] is False
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    volumes = {v["name"]: v for v in spec["volumes"]}
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]

    # Secrets are files: every SLUICE_*_FILE points into a mounted secret volume, and no
    # environment value holds a URL with credentials.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    files = {e["name"]: e["value"] for e in container["env"] if e["name"].endswith("_FILE")}
    assert "SLUICE_AMQP_URL_FILE" in files
    for env_name, path in files.items():
        mount = mounts.get(os.path.dirname(path))
        assert mount is not None, f"{env_name}={path} is not under a mounted volume"
        volume = volumes[mount]
        assert "secret" in volume or "projected" in volume, (env_name, volume)
    for env in container["env"]:
        assert "://" not in str(env.get("value", "")), env

    pod_labels = deployment["spec"]["template"]["metadata"]["labels"].items()
    selected = [
        pdb for pdb in by_kind(docs, "PodDisruptionBudget").values()
        if pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels
    ]
    assert len(selected) == 1, f"{name} needs exactly one PodDisruptionBudget"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels


def test_services_hpa_and_ingress_point_at_what_exists() -> None:
    docs = base()
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    for service in services.values():
        matching = [
            d for d in deployments.values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching, f"Service {service['metadata']['name']} selects no pods"
        names = {p["name"] for c in pod_spec(matching[0])["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, port
    assert services["sluice-ingest"]["spec"]["ports"][0]["port"] == 7000
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sluice-server"
    assert hpa["spec"]["minReplicas"] >= 2
    (ingress,) = by_kind(docs, "Ingress").values()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in services
    assert backend["port"]["name"] in {p["name"] for p in services[backend["name"]]["spec"]["ports"]}


def test_keda_scales_the_parsers_on_the_raw_queue() -> None:
    """The queue name is the one the services declare, so a renamed queue cannot leave
    the autoscaler watching nothing."""
    scaled = by_kind(keda(), "ScaledObject")["sluice-parser"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind(base(), "Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == Topology(namespace="sluice").raw_queue("measurement")
    auth = trigger["authenticationRef"]["name"]
    assert auth in by_kind(keda(), "TriggerAuthentication")
