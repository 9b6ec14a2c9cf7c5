"""Without Knative (pure): per function a Deployment, a ClusterIP Service and a
HorizontalPodAutoscaler on the resource the spec names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopar.operator import names
from mopar.operator.names import Object
from mopar.operator.pods import GRPC_PORT, GRPC_PORT_NAME, PORT, deployment_pod_spec
from mopar.operator.scaling import Autoscaling
from mopar.operator.spec import ModelSpec


def build_deployment(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
    spec: ModelSpec,
    slice_id: str | None = None,
) -> Object:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": names.metadata(name, owner, component, slice_id),
        "spec": {
            # No `replicas`: the HPA owns the count (its minReplicas is the floor); stating one here
            # would scale the Deployment back down on every reconcile.
            "selector": {"matchLabels": names.selector(owner["name"], component, slice_id)},
            "template": {
                "metadata": {"labels": names.labels(owner["name"], component, slice_id)},
                "spec": deployment_pod_spec(container, owner["name"], spec),
            },
        },
    }


def build_service(
    name: str, owner: Mapping[str, Any], component: str, slice_id: str | None = None, grpc: bool = False
) -> Object:
    """A ClusterIP Service: HTTP on port 80 and, for a gateway serving gRPC, gRPC on GRPC_PORT
    (appProtocol h2c: HTTP/2 without TLS, for meshes and gateways that route by protocol)."""
    ports: list[dict[str, Any]] = [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]
    if grpc:
        ports.append(
            {
                "name": GRPC_PORT_NAME,
                "port": GRPC_PORT,
                "targetPort": GRPC_PORT,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(name, owner, component, slice_id),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(owner["name"], component, slice_id),
            "ports": ports,
        },
    }


def build_hpa(
    name: str, owner: Mapping[str, Any], component: str, scaling: Autoscaling, slice_id: str | None = None
) -> Object:
    """Scale on the resolved metric (cpu or memory, a percentage of the pod's request)."""
    assert scaling.metric in ("cpu", "memory") and scaling.target is not None, "resolve for the Deployment path"
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": max(1, scaling.min_scale),
        "maxReplicas": max(1, scaling.max_scale),
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": scaling.metric,
                    "target": {"type": "Utilization", "averageUtilization": scaling.target},
                },
            }
        ],
    }
    delay = scaling.delay_seconds()
    if delay is not None:  # Knative's scale-down-delay, as the HPA says it
        spec["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": delay}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.metadata(name, owner, component, slice_id),
        "spec": spec,
    }
