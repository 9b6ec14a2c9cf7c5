"""Knative Services of a model's functions (pure): the revision template carries the
autoscaling annotations, `containerConcurrency` and the pod."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopar.operator import names
from mopar.operator.names import Object
from mopar.operator.pods import pod_spec
from mopar.operator.spec import ModelSpec


def autoscaling_annotations(spec: ModelSpec) -> dict[str, str]:
    a = spec.autoscaling
    annotations = {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": a.metric,
        "autoscaling.knative.dev/target": str(a.target),
        "autoscaling.knative.dev/min-scale": str(0 if a.scale_to_zero else a.min_scale),
        "autoscaling.knative.dev/max-scale": str(a.max_scale),
        "autoscaling.knative.dev/initial-scale": str(max(1, 0 if a.scale_to_zero else a.min_scale)),
    }
    if a.scale_down_delay:
        annotations["autoscaling.knative.dev/scale-down-delay"] = a.scale_down_delay
    return annotations


def build_knative_service(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
    spec: ModelSpec,
    concurrency: int,
    slice_id: str | None = None,
) -> Object:
    metadata = names.metadata(name, owner, component, slice_id)
    if component == "slice":  # slices are reached by the gateway only
        metadata["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {
                    "labels": names.labels(owner["name"], component, slice_id),
                    "annotations": autoscaling_annotations(spec),
                },
                "spec": {**pod_spec(container, owner["name"]), "containerConcurrency": concurrency},
            }
        },
    }
