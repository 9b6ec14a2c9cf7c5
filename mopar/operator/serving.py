"""Everything that serves a prepared model (pure): per function a Knative Service, or a
Deployment, a Service and an HPA; the same for the gateway; the plan ConfigMap they mount;
and the endpoint users call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mopar.operator import names
from mopar.operator.deployments import build_deployment, build_hpa, build_service
from mopar.operator.knative import build_knative_service
from mopar.operator.names import Object
from mopar.operator.pods import gateway_container, slice_container
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import KNATIVE, ModelSpec
from mopar.operator.units import SliceUnit


def build_serving(
    owner: Mapping[str, Any], spec: ModelSpec, units: Sequence[SliceUnit], serving: str, settings: OperatorSettings
) -> list[Object]:
    """The objects that serve a prepared model: per slice and for the gateway."""
    objects: list[Object] = []
    pm = owner["name"]
    for unit in units:
        name, container = names.slice_name(pm, unit.id), slice_container(unit, owner, spec, settings)
        if serving == KNATIVE:
            objects.append(
                build_knative_service(name, owner, "slice", container, spec, spec.autoscaling.target, unit.id)
            )
        else:
            objects += [
                build_deployment(name, owner, "slice", container, unit.id),
                build_service(name, owner, "slice", unit.id),
                build_hpa(name, owner, "slice", spec, unit.id),
            ]
    name, container = names.gateway_name(pm, serving), gateway_container(units, owner, spec, settings)
    if serving == KNATIVE:
        objects.append(build_knative_service(name, owner, "gateway", container, spec, 0))
    else:
        objects += [
            build_deployment(name, owner, "gateway", container),
            build_service(name, owner, "gateway"),
            build_hpa(name, owner, "gateway", spec),
        ]
    return objects


def build_plan_configmap(owner: Mapping[str, Any], manifest_json: str, prepare_hash: str) -> Object:
    """The manifest the slices and the gateway mount, annotated with the spec hash it answers."""
    metadata = names.metadata(names.plan_configmap_name(owner["name"]), owner, "plan")
    metadata["labels"][names.PLAN_LABEL] = "true"
    metadata["annotations"] = {names.HASH_ANNOTATION: prepare_hash}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {names.MANIFEST_KEY: manifest_json}}


def endpoint(
    owner: Mapping[str, Any], spec: ModelSpec, serving: str, settings: OperatorSettings, knative_url: str | None = None
) -> str:
    """The V2 infer URL of the model (the Knative route's URL where Knative reports one)."""
    base = knative_url or (
        f"http://{names.gateway_name(owner['name'], serving)}.{owner['namespace']}.svc.{settings.cluster_domain}"
    )
    return f"{base}/v2/models/{spec.served_name}/infer"
