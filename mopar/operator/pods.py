"""The pod pieces every function shares (pure): image, environment, volumes, probes, resources
and security settings of slice and gateway containers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mopar.operator import names
from mopar.operator.credentials import transport_env
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import ModelSpec
from mopar.operator.units import SliceUnit, slice_url

PORT = 8080
MANIFEST_DIR = "/etc/mopar"
CACHE_DIR = "/tmp/mopar-cache"  # slice files and optimised graphs, on the pod's /tmp emptyDir
# Shutting down: the kubelet runs preStop (a pause while endpoints stop sending new requests),
# then SIGTERM, on which gateway and workers finish what is in flight within GRACE_SECONDS;
# terminationGracePeriodSeconds covers both and a margin before SIGKILL. Under Knative the
# queue-proxy drains first and the pod's grace is the revision's timeoutSeconds (300 s).
GRACE_SECONDS = 30
PRESTOP_SECONDS = 5
TERMINATION_GRACE_SECONDS = PRESTOP_SECONDS + GRACE_SECONDS + 5


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def image(spec: ModelSpec, settings: OperatorSettings) -> dict[str, str]:
    return {
        "image": spec.runtime.image or settings.image,
        "imagePullPolicy": spec.runtime.pull_policy or settings.pull_policy,
    }


def _runtime_env(owner: Mapping[str, Any], spec: ModelSpec) -> list[dict[str, Any]]:
    t = spec.transport
    return [
        *transport_env(owner, spec),
        {"name": "MOPAR_NAMESPACE", "value": owner["namespace"]},
        {"name": "MOPAR_MANIFEST", "value": f"{MANIFEST_DIR}/{names.MANIFEST_KEY}"},
        {"name": "MOPAR_PORT", "value": str(PORT)},
        {"name": "MOPAR_THREADS", "value": str(spec.runtime.threads)},
        {"name": "MOPAR_CODEC", "value": t.codec},
        {"name": "MOPAR_COMPRESS_THRESHOLD", "value": str(t.compression_threshold_bytes)},
        {"name": "MOPAR_ACTIVATION_TTL", "value": str(t.activation_ttl_seconds)},
        {"name": "MOPAR_CACHE_DIR", "value": CACHE_DIR},
        {"name": "MOPAR_GRACE_SECONDS", "value": str(GRACE_SECONDS)},
        {"name": "OMP_NUM_THREADS", "value": str(spec.runtime.threads)},
    ]


def _volumes(pm: str) -> list[dict[str, Any]]:
    return [
        {"name": "plan", "configMap": {"name": names.plan_configmap_name(pm)}},
        {"name": "tmp", "emptyDir": {}},
    ]


def _mounts() -> list[dict[str, Any]]:
    return [{"name": "plan", "mountPath": MANIFEST_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]


def _container(
    name: str,
    args: Sequence[str],
    env: list[dict[str, Any]],
    resources: Mapping[str, Any],
    spec: ModelSpec,
    settings: OperatorSettings,
    live: str,
    ready: str,
) -> dict[str, Any]:
    return {
        "name": name,
        **image(spec, settings),
        "args": list(args),
        "env": env,
        "ports": [{"name": "http1", "containerPort": PORT}],
        "resources": dict(resources),
        "readinessProbe": {"httpGet": {"path": ready, "port": PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": live, "port": PORT}, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(),
    }


def slice_resources(unit: SliceUnit, spec: ModelSpec) -> dict[str, Any]:
    """Right-sized from the plan: the slice's memory, one CPU per onnxruntime thread."""
    amounts = {"cpu": str(spec.runtime.threads), "memory": f"{unit.memory_mb}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def gateway_resources(spec: ModelSpec) -> dict[str, Any]:
    return dict(
        spec.runtime.gateway_resources
        or {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    )


def pod_spec(container: dict[str, Any], pm: str) -> dict[str, Any]:
    return {
        "containers": [container],
        "volumes": _volumes(pm),
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
    }


def deployment_pod_spec(container: dict[str, Any], pm: str) -> dict[str, Any]:
    """`pod_spec` with the shutdown above (Knative keeps neither field: it brings its own)."""
    paused = {**container, "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}}
    return {**pod_spec(paused, pm), "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS}


def slice_container(
    unit: SliceUnit, owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings
) -> dict[str, Any]:
    env = [*_runtime_env(owner, spec), {"name": "MOPAR_SLICE", "value": unit.id}]
    return _container(
        "slice", ["worker"], env, slice_resources(unit, spec), spec, settings, "/health/live", "/health/ready"
    )


def gateway_container(
    units: Sequence[SliceUnit], owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings
) -> dict[str, Any]:
    urls = ",".join(f"{u.id}={slice_url(owner, u, settings)}" for u in units)
    env = [
        *_runtime_env(owner, spec),
        {"name": "MOPAR_SLICE_URLS", "value": urls},
        {"name": "MOPAR_MODEL_NAME", "value": spec.served_name},
    ]
    return _container(
        "gateway", ["gateway"], env, gateway_resources(spec), spec, settings, "/v2/health/live", "/v2/health/ready"
    )
