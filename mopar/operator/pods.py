"""The pod pieces every function shares (pure): image, environment, volumes, probes, resources,
security settings and the spec's pod settings of slice and gateway containers.

On the Knative path the pod carries no pod-level securityContext unless the spec says the
cluster enables it (`kubernetes.podspec-securitycontext`, off by default: knative/serving
v1.23.0 `pkg/apis/config/features.go`); the container-level one, which Knative's
SecurityContextMask keeps, says everything that matters (user, group, no escalation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mopar.operator import names
from mopar.operator.credentials import transport_env
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec
from mopar.operator.units import SliceUnit, slice_url
from slice_runtime.probes import SLICE_CHECK_SECONDS
from slice_runtime.store import CONNECT_TIMEOUT_SECONDS

PORT = 8080
# Knative accepts only these port names (k8s_validation.go validPortNames) and renames the
# port `user-port` on the pods it makes (revision_helpers.go UserPortName).
PORT_NAME = "http1"
# The gateway's gRPC service (KServe's port). A Knative Service has exactly one port, so on
# Knative gRPC is a second Service whose one port is named `h2c` (HTTP/2 without TLS all the
# way to the container); its probes still name the HTTP port by number, which Knative allows
# (only a named probe port must be the user port) and its prober reaches over HTTP/1.1.
GRPC_PORT = 8081
GRPC_PORT_NAME = "grpc"
H2C = "h2c"
MANIFEST_DIR = "/etc/mopar"
CACHE_DIR = "/tmp/mopar-cache"  # slice files and optimised graphs, on the pod's /tmp emptyDir
USER = 10001
# A worker fetches its slice file and opens its session before it listens: give it as long as
# Knative waits for a revision to come up (config-deployment progress-deadline, 600 s).
STARTUP_SECONDS = 600
STARTUP_PERIOD = 5
# Readiness checks wait for the store (a ping, CONNECT_TIMEOUT_SECONDS at most to connect) and,
# on the gateway, for every slice at once (SLICE_CHECK_SECONDS each); one second more for HTTP.
WORKER_READY_TIMEOUT = math.ceil(CONNECT_TIMEOUT_SECONDS + 1)
GATEWAY_READY_TIMEOUT = math.ceil(CONNECT_TIMEOUT_SECONDS + SLICE_CHECK_SECONDS + 1)
# Shutting down: the kubelet runs preStop (a pause while endpoints stop sending new requests),
# then SIGTERM, on which gateway and workers finish what is in flight within GRACE_SECONDS;
# terminationGracePeriodSeconds covers both and a margin before SIGKILL. Under Knative the
# queue-proxy drains first and the pod's grace is the revision's timeoutSeconds (300 s).
GRACE_SECONDS = 30
PRESTOP_SECONDS = 5
TERMINATION_GRACE_SECONDS = PRESTOP_SECONDS + GRACE_SECONDS + 5


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER,
        "runAsGroup": USER,
        "fsGroup": USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER,
        "runAsGroup": USER,
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


def _runtime_env(owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    t = spec.transport
    return [
        *transport_env(owner, spec),
        # The store scope: every key this model's pods write starts with mopar:{scope}:
        {"name": "MOPAR_NAMESPACE", "value": names.store_scope(owner)},
        {"name": "MOPAR_MANIFEST", "value": f"{MANIFEST_DIR}/{names.MANIFEST_KEY}"},
        {"name": "MOPAR_PORT", "value": str(PORT)},
        {"name": "MOPAR_CODEC", "value": t.codec},
        {"name": "MOPAR_COMPRESS_THRESHOLD", "value": str(t.compression_threshold_bytes)},
        {"name": "MOPAR_ACTIVATION_TTL", "value": str(t.activation_ttl_seconds)},
        {"name": "MOPAR_CACHE_DIR", "value": CACHE_DIR},
        {"name": "MOPAR_GRACE_SECONDS", "value": str(GRACE_SECONDS)},
    ]


def _volumes(pm: str) -> list[dict[str, Any]]:
    return [
        {"name": "plan", "configMap": {"name": names.plan_configmap_name(pm)}},
        {"name": "tmp", "emptyDir": {}},
    ]


def _mounts() -> list[dict[str, Any]]:
    return [{"name": "plan", "mountPath": MANIFEST_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]


def _probe(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _container(
    name: str,
    args: Sequence[str],
    env: list[dict[str, Any]],
    resources: Mapping[str, Any],
    spec: ModelSpec,
    settings: OperatorSettings,
    probes: tuple[str, str, int],
) -> dict[str, Any]:
    live, ready, ready_timeout = probes
    return {
        "name": name,
        **image(spec, settings),
        "args": list(args),
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "resources": dict(resources),
        # Liveness and readiness begin once the startup probe has seen the server listen.
        "startupProbe": _probe(live, STARTUP_PERIOD, 3, STARTUP_SECONDS // STARTUP_PERIOD),
        "readinessProbe": _probe(ready, 5, ready_timeout, 3),
        "livenessProbe": _probe(live, 10, 3, 6),
        "securityContext": container_security_context(),
        "volumeMounts": _mounts(),
    }


def slice_cpu(unit: SliceUnit, spec: ModelSpec) -> tuple[float, int]:
    """(vCPUs, intra-op threads) of a slice's pod: as planned, or as `spec.runtime.threads` pins them."""
    if spec.runtime.threads is not None:
        return float(spec.runtime.threads), spec.runtime.threads
    return (float(unit.threads) if unit.cpu is None else unit.cpu), unit.threads


def cpu_quantity(vcpus: float) -> str:
    """vCPUs as a Kubernetes quantity: "2" for whole CPUs, else millicores ("250m", "2500m")."""
    millis = round(vcpus * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def slice_resources(unit: SliceUnit, spec: ModelSpec) -> dict[str, Any]:
    """Right-sized from the plan: the slice's memory and vCPUs, requested and limited alike."""
    amounts = {"cpu": cpu_quantity(slice_cpu(unit, spec)[0]), "memory": f"{unit.memory_mb}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def gateway_resources(spec: ModelSpec) -> dict[str, Any]:
    return dict(
        spec.runtime.gateway.resources
        or {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    )


def pod_spec(container: dict[str, Any], pm: str, spec: ModelSpec, serving: str) -> dict[str, Any]:
    """A function's pod: its container, the plan and scratch volumes, no API token, the spec's
    pod settings, and a pod-level securityContext wherever the platform accepts one."""
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": _volumes(pm),
        "automountServiceAccountToken": False,
        **spec.pod.fields(),
    }
    if serving != KNATIVE or spec.pod_security_context:
        pod["securityContext"] = pod_security_context()
    return pod


def deployment_pod_spec(container: dict[str, Any], pm: str, spec: ModelSpec) -> dict[str, Any]:
    """`pod_spec` with the shutdown above (Knative keeps neither field: it brings its own)."""
    paused = {**container, "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}}
    return {**pod_spec(paused, pm, spec, DEPLOYMENT), "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS}


def slice_container(
    unit: SliceUnit, owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings
) -> dict[str, Any]:
    threads = str(slice_cpu(unit, spec)[1])
    env = [
        *_runtime_env(owner, spec, settings),
        {"name": "MOPAR_SLICE", "value": unit.id},
        {"name": "MOPAR_THREADS", "value": threads},
        {"name": "OMP_NUM_THREADS", "value": threads},
    ]
    probes = ("/health/live", "/health/ready", WORKER_READY_TIMEOUT)
    return _container("slice", ["worker"], env, slice_resources(unit, spec), spec, settings, probes)


def gateway_container(
    units: Sequence[SliceUnit],
    owner: Mapping[str, Any],
    spec: ModelSpec,
    settings: OperatorSettings,
    serving: str = DEPLOYMENT,
    grpc_only: bool = False,
) -> dict[str, Any]:
    """The gateway: REST on PORT and, where the spec asks for gRPC, gRPC on GRPC_PORT; on Knative
    the REST gateway's Service exposes REST only, and `grpc_only` builds the gRPC one's."""
    urls = ",".join(f"{u.id}={slice_url(owner, u, settings)}" for u in units)
    env = [
        *_runtime_env(owner, spec, settings),
        {"name": "MOPAR_SLICE_URLS", "value": urls},
        {"name": "MOPAR_MODEL_NAME", "value": spec.served_name},
        # The request's deadline, and each slice call's within it.
        {"name": "MOPAR_REQUEST_TIMEOUT", "value": str(spec.timeout_seconds)},
        {"name": "MOPAR_CALL_TIMEOUT", "value": str(min(30, spec.timeout_seconds))},
    ]
    if spec.dynamic_batching:
        env += [
            {"name": "MOPAR_DYNAMIC_BATCHING", "value": "1"},
            {"name": "MOPAR_MAX_QUEUE_DELAY_US", "value": str(spec.max_queue_delay_us)},
        ]
    grpc = spec.runtime.gateway.grpc and (serving != KNATIVE or grpc_only)
    if grpc:
        env.append({"name": "MOPAR_GRPC_PORT", "value": str(GRPC_PORT)})
    probes = ("/v2/health/live", "/v2/health/ready", GATEWAY_READY_TIMEOUT)
    container = _container("gateway", ["gateway"], env, gateway_resources(spec), spec, settings, probes)
    if grpc_only:
        container["ports"] = [{"name": H2C, "containerPort": GRPC_PORT}]
    elif grpc:
        container["ports"].append({"name": GRPC_PORT_NAME, "containerPort": GRPC_PORT})
    return container


def memory_mib(resources: Mapping[str, Any]) -> int | None:
    """The memory a container requests (else its limit), in MiB; None when it names none."""
    for group in ("requests", "limits"):
        quantity = (resources.get(group) or {}).get("memory")
        if quantity is not None:
            return quantity_mib(str(quantity))
    return None


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_mib(quantity: str) -> int:
    """A Kubernetes memory quantity ("256Mi", "1G", "1048576") in MiB, rounded up."""
    for suffix, factor in sorted(_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if quantity.endswith(suffix):
            return math.ceil(float(quantity[: -len(suffix)]) * factor / 2**20)
    return math.ceil(float(quantity) / 2**20)
