"""Everything that serves a prepared model (pure): per function a Knative Service, or a
Deployment, a Service and an HPA; the same for the gateway; the plan ConfigMap they mount;
and the URLs users call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mopar.operator import names, status
from mopar.operator.deployments import build_deployment, build_hpa, build_service
from mopar.operator.knative import build_knative_service
from mopar.operator.names import Object
from mopar.operator.pods import GRPC_PORT, gateway_container, slice_container
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import KNATIVE, ModelSpec
from mopar.operator.units import SliceUnit


def build_serving(
    owner: Mapping[str, Any], spec: ModelSpec, units: Sequence[SliceUnit], serving: str, settings: OperatorSettings
) -> list[Object]:
    """The objects that serve a prepared model: per slice and for the gateway (SpecError when
    `serving` cannot run the spec)."""
    spec.check_serving(serving)
    objects: list[Object] = []
    pm = owner["name"]
    slices, gateway = spec.slice_autoscaling(serving), spec.gateway_autoscaling(serving)
    for unit in units:
        name, container = names.slice_name(pm, unit.id), slice_container(unit, owner, spec, settings)
        if serving == KNATIVE:
            concurrency = spec.slice_concurrency(serving)
            objects.append(build_knative_service(name, owner, "slice", container, spec, slices, concurrency, unit.id))
        else:
            objects += [
                build_deployment(name, owner, "slice", container, spec, unit.id),
                build_service(name, owner, "slice", unit.id),
                build_hpa(name, owner, "slice", slices, unit.id),
            ]
    name, container = names.gateway_name(pm, serving), gateway_container(units, owner, spec, settings, serving)
    grpc = spec.runtime.gateway.grpc
    if serving == KNATIVE:
        concurrency = spec.runtime.gateway.container_concurrency
        objects.append(build_knative_service(name, owner, "gateway", container, spec, gateway, concurrency))
        if grpc:  # one port per Knative Service: gRPC gets its own
            rpc = gateway_container(units, owner, spec, settings, serving, grpc_only=True)
            labels = {names.PROTOCOL_LABEL: "grpc"}
            objects.append(
                build_knative_service(
                    names.grpc_gateway_name(pm), owner, "gateway", rpc, spec, gateway, concurrency, pod_labels=labels
                )
            )
    else:
        objects += [
            build_deployment(name, owner, "gateway", container, spec),
            build_service(name, owner, "gateway", grpc=grpc),
            build_hpa(name, owner, "gateway", gateway),
        ]
    return objects


def build_plan_configmap(owner: Mapping[str, Any], manifest_json: str, prepare_hash: str) -> Object:
    """The manifest the slices and the gateway mount, annotated with the spec hash it answers."""
    metadata = names.metadata(names.plan_configmap_name(owner["name"]), owner, "plan")
    metadata["labels"][names.PLAN_LABEL] = "true"
    metadata["annotations"] = {names.HASH_ANNOTATION: prepare_hash}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {names.MANIFEST_KEY: manifest_json}}


def cluster_url(owner: Mapping[str, Any], serving: str, settings: OperatorSettings) -> str:
    """The gateway's address inside the cluster (a Knative Service answers there too)."""
    return f"http://{names.gateway_name(owner['name'], serving)}.{owner['namespace']}.svc.{settings.cluster_domain}"


def grpc_address(owner: Mapping[str, Any], serving: str, settings: OperatorSettings) -> str:
    """host:port of the gateway's gRPC service inside the cluster."""
    namespace, domain = owner["namespace"], settings.cluster_domain
    if serving == KNATIVE:
        return f"{names.grpc_gateway_name(owner['name'])}.{namespace}.svc.{domain}:80"
    return f"{names.gateway_name(owner['name'], serving)}.{namespace}.svc.{domain}:{GRPC_PORT}"


def urls(
    owner: Mapping[str, Any], spec: ModelSpec, serving: str, settings: OperatorSettings, knative_url: str | None = None
) -> dict[str, Any]:
    """`url` (the Knative route's URL where Knative reports one), `address.url` and the V2
    `endpoint` of the model, and `grpcAddress` where the gateway serves gRPC."""
    inside = cluster_url(owner, serving, settings)
    found = status.addresses(knative_url or inside, inside, spec.served_name)
    if spec.runtime.gateway.grpc:
        found["grpcAddress"] = grpc_address(owner, serving, settings)
    return found
