"""Every name the operator gives: Kubernetes object names, labels, annotations, artifact names.

One place, so the handlers, the builders, `mopar render` and the prepare Job agree on what
an object is called and how its pods are selected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from mopar.operator.spec import GROUP, KIND, KNATIVE, VERSION

Object = dict[str, Any]

# Annotations and labels of the operator's own.
PREFIX = "mopar.dev"
FINALIZER = f"{PREFIX}/finalizer"
PLAN_LABEL = f"{PREFIX}/plan"
MODEL_LABEL = f"{PREFIX}/model"
SLICE_LABEL = f"{PREFIX}/slice"
HASH_ANNOTATION = f"{PREFIX}/prepare-hash"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
# On the pods of the Knative Service that serves a gateway's gRPC (their user port is gRPC's).
PROTOCOL_LABEL = "mopar.dev/protocol"
# The key of the plan ConfigMap that holds manifest.json.
MANIFEST_KEY = "manifest.json"


def dns_name(*parts: str, limit: int = 49) -> str:
    """A DNS-1035 label from `parts` (Knative appends '-00001' to revision names, so 49 by default)."""
    name = "-".join(parts).lower().replace(".", "-").replace("_", "-")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def slice_name(pm: str, slice_id: str) -> str:
    return dns_name(pm, slice_id)


def gateway_name(pm: str, serving: str) -> str:
    # The Knative gateway takes the model's own name: its URL is the model's endpoint.
    return dns_name(pm) if serving == KNATIVE else dns_name(pm, "gateway")


def grpc_gateway_name(pm: str) -> str:
    """The Knative Service of the gateway's gRPC service (a Knative Service has one port)."""
    return dns_name(pm, "grpc")


def plan_configmap_name(pm: str) -> str:
    return dns_name(pm, "plan", limit=63)


def prepare_job_name(pm: str, prepare_hash: str) -> str:
    return dns_name(pm, "prepare", prepare_hash[:8], limit=63)


def redis_secret_name(pm: str) -> str:
    return dns_name(pm, "redis", limit=63)


def store_scope(owner: Mapping[str, Any]) -> str:
    """The key scope of one model in the store: every key of its pods starts with
    `mopar:{scope}:`. Namespaces have no dots (DNS-1123 labels), so `{namespace}.{name}` names
    one model only, and one ACL key pattern per model cannot reach another's keys."""
    return f"{owner['namespace']}.{owner['name']}"


def manifest_artifact(pm: str, prepare_hash: str) -> str:
    """The artifact-store name under which the prepare Job publishes a model's manifest
    (`manifest_artifact(pm, "")` is the prefix of all of that model's)."""
    return f"manifest/{pm}/{prepare_hash}"


def labels(pm: str, component: str, slice_id: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "mopar",
        INSTANCE_LABEL: pm,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/managed-by": "mopar-operator",
        MODEL_LABEL: pm,
    }
    if slice_id is not None:
        result[SLICE_LABEL] = slice_id.replace(".", "-")
    return result


def selector(pm: str, component: str, slice_id: str | None = None) -> dict[str, str]:
    """The labels that pick one function's pods (its Deployment's and its Service's selector)."""
    chosen = {INSTANCE_LABEL: pm, COMPONENT_LABEL: component}
    if slice_id is not None:
        chosen[SLICE_LABEL] = slice_id.replace(".", "-")
    return chosen


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(name: str, owner: Mapping[str, Any], component: str, slice_id: str | None = None) -> dict[str, Any]:
    """An object's metadata: its name, the model's namespace and labels, and the model as owner."""
    result: dict[str, Any] = {
        "name": name,
        "namespace": owner["namespace"],
        "labels": labels(owner["name"], component, slice_id),
    }
    if owner.get("uid"):  # a model not created yet (`mopar render`) has none: the operator adopts them
        result["ownerReferences"] = [owner_reference(owner)]
    return result
