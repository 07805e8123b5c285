"""Renders deploy/k8s/base the way ``kubectl kustomize`` does, for the subset of Kustomize
that the base uses (resources, namespace, labels, images), so that CI can validate the
manifests without a kustomize or kubectl binary. A kustomization that uses anything else
fails loudly instead of rendering something kustomize would not.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "deploy", "k8s")
SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
#: kinds without a namespace among those the manifests use
CLUSTER_SCOPED = {"Namespace"}

Manifest = dict[str, Any]


def load_all(path: str) -> list[Manifest]:
    with open(path, encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _containers(doc: Manifest) -> list[dict[str, Any]]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def render(directory: str) -> list[Manifest]:
    kustomization = load_all(os.path.join(directory, "kustomization.yaml"))[0]
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"kustomization uses {sorted(unknown)}, which this renderer does not know")
    namespace = kustomization.get("namespace")
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        if set(entry) - {"pairs"}:
            raise ValueError(f"labels entry {entry} uses more than pairs")
        labels.update(entry["pairs"])
    images = {image["name"]: image for image in kustomization.get("images", [])}

    out: list[Manifest] = []
    for resource in kustomization["resources"]:
        for doc in load_all(os.path.join(directory, resource)):
            doc = copy.deepcopy(doc)
            meta = doc.setdefault("metadata", {})
            if namespace and doc["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = namespace
            if labels:
                meta.setdefault("labels", {}).update(labels)
            for container in _containers(doc):
                override = images.get(_image_name(container["image"]))
                if override:
                    container["image"] = f"{override['newName']}:{override['newTag']}"
            out.append(doc)
    return out
