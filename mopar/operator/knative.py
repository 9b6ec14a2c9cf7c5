"""Knative Services of a model's functions (pure): the revision template carries the
autoscaling annotations, `containerConcurrency`, `timeoutSeconds` and the pod.

Requests (concurrency, rps) are scaled by Knative's KPA; cpu and memory by its HPA class,
whose memory target is MiB per pod (knative/serving v1.23.0
`pkg/reconciler/autoscaling/hpa/resources/hpa.go`): the spec's percentage of the pod's memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mopar.operator import names
from mopar.operator.names import Object
from mopar.operator.pods import memory_mib, pod_spec
from mopar.operator.scaling import REQUEST_METRICS, Autoscaling
from mopar.operator.spec import KNATIVE, ModelSpec

KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"


def autoscaling_annotations(scaling: Autoscaling, memory: int | None = None) -> dict[str, str]:
    """The revision's annotations for resolved settings (`Autoscaling.on`); `memory` is the pod's
    memory in MiB, for a memory target."""
    assert scaling.metric is not None and scaling.target is not None, "resolve the settings first"
    target = scaling.target
    if scaling.metric == "memory":
        if memory is None:
            raise ValueError("a memory target needs the pod's memory request")
        target = math.ceil(scaling.target * memory / 100)
    annotations = {
        "autoscaling.knative.dev/class": KPA if scaling.metric in REQUEST_METRICS else HPA,
        "autoscaling.knative.dev/metric": scaling.metric,
        "autoscaling.knative.dev/target": str(target),
        "autoscaling.knative.dev/min-scale": str(scaling.floor),
        "autoscaling.knative.dev/max-scale": str(scaling.max_scale),
        "autoscaling.knative.dev/initial-scale": str(max(1, scaling.floor)),
    }
    if scaling.scale_down_delay:
        annotations["autoscaling.knative.dev/scale-down-delay"] = scaling.scale_down_delay
    return annotations


def build_knative_service(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
    spec: ModelSpec,
    scaling: Autoscaling,
    concurrency: int,
    slice_id: str | None = None,
    pod_labels: Mapping[str, str] | None = None,
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
                    "labels": {**names.labels(owner["name"], component, slice_id), **(pod_labels or {})},
                    "annotations": autoscaling_annotations(scaling, memory_mib(container["resources"])),
                },
                "spec": {
                    **pod_spec(container, owner["name"], spec, KNATIVE),
                    "containerConcurrency": concurrency,
                    "timeoutSeconds": spec.timeout_seconds,
                },
            }
        },
    }
