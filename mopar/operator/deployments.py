"""Without Knative (pure): per function a Deployment, a ClusterIP Service and a
HorizontalPodAutoscaler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopar.operator import names
from mopar.operator.names import Object
from mopar.operator.pods import PORT, deployment_pod_spec
from mopar.operator.spec import ModelSpec


def build_deployment(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
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
                "spec": deployment_pod_spec(container, owner["name"]),
            },
        },
    }


def build_service(name: str, owner: Mapping[str, Any], component: str, slice_id: str | None = None) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(name, owner, component, slice_id),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(owner["name"], component, slice_id),
            "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def build_hpa(
    name: str, owner: Mapping[str, Any], component: str, spec: ModelSpec, slice_id: str | None = None
) -> Object:
    """Without Knative there is no request-concurrency autoscaler: scale on CPU (a slice is CPU-bound)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": names.metadata(name, owner, component, slice_id),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": max(1, spec.autoscaling.min_scale),
            "maxReplicas": max(1, spec.autoscaling.max_scale),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
