"""The Kubernetes objects of a PartitionedModel, built as plain dicts (pure).

One `build_*` function per object; handlers only build, create or patch, and report.
Per slice and sub-slice: a Knative Service (autoscaling annotations on the revision
template, memory and CPU from the plan), or, without Knative, a Deployment, a Service
and a HorizontalPodAutoscaler; the same for the gateway; and the Job that prepares the
plan. Pods run non-root with a read-only root filesystem; the Redis URL comes from a
Secret when it carries a password.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import OperatorSettings
from .spec import GROUP, KIND, VERSION, ModelSpec

PORT = 8080
MANIFEST_DIR = "/etc/mopar"
CACHE_DIR = "/tmp/mopar-cache"  # slice files and optimised graphs, on the pod's /tmp emptyDir
# Where the prepare Job mounts a pvc:// claim or a configmap:// ConfigMap (storage.fetch reads there).
PVC_MOUNT_ROOT = "/mnt/pvc"
CONFIGMAP_MOUNT_ROOT = "/mnt/configmap"
MANIFEST_KEY = "manifest.json"
PLAN_LABEL = "mopar.dev/plan"
HASH_ANNOTATION = "mopar.dev/prepare-hash"
KNATIVE = "knative"
DEPLOYMENT = "deployment"
Object = dict[str, Any]


@dataclass(frozen=True)
class SliceUnit:
    """One function to deploy: a slice, or one sub-slice of a split slice."""

    id: str
    memory_mb: int
    group: str | None = None


def units_from_manifest(manifest: Mapping[str, Any]) -> list[SliceUnit]:
    return [SliceUnit(s["id"], int(s["memory_mb"]), s.get("group")) for s in manifest["slices"]]


def units_from_plan(plan: Mapping[str, Any]) -> list[SliceUnit]:
    """The functions a plan.json implies (what the slicer will write for it)."""
    units = []
    for entry in plan["slices"]:
        k = (entry.get("subslices") or {}).get("k", 1)
        if k == 1:
            units.append(SliceUnit(entry["id"], int(entry["memory_mb"])))
        else:
            units += [SliceUnit(f"{entry['id']}.{i}", int(entry["memory_mb"]), entry["id"]) for i in range(k)]
    return units


# -- names and labels -----------------------------------------------------------------
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


def plan_configmap_name(pm: str) -> str:
    return dns_name(pm, "plan", limit=63)


def prepare_job_name(pm: str, spec: ModelSpec) -> str:
    return dns_name(pm, "prepare", spec.prepare_hash()[:8], limit=63)


def labels(pm: str, component: str, slice_id: str | None = None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": "mopar",
        "app.kubernetes.io/instance": pm,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "mopar-operator",
        "mopar.dev/model": pm,
    }
    if slice_id is not None:
        result["mopar.dev/slice"] = slice_id.replace(".", "-")
    return result


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, owner: Mapping[str, Any], component: str, slice_id: str | None = None) -> dict[str, Any]:
    metadata = {"name": name, "namespace": owner["namespace"], "labels": labels(owner["name"], component, slice_id)}
    if owner.get("uid"):  # a model not created yet (`mopar render`) has none: the operator adopts them
        metadata["ownerReferences"] = [owner_reference(owner)]
    return metadata


# -- pod pieces -------------------------------------------------------------------------
def _pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}


def _image(spec: ModelSpec, settings: OperatorSettings) -> dict[str, str]:
    return {
        "image": spec.runtime.image or settings.image,
        "imagePullPolicy": spec.runtime.pull_policy or settings.pull_policy,
    }


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def redis_secret_name(pm: str) -> str:
    return dns_name(pm, "redis", limit=63)


def transport_env(owner: Mapping[str, Any], spec: ModelSpec) -> list[dict[str, Any]]:
    """MOPAR_TRANSPORT and MOPAR_ARTIFACTS: the spec's URL when it has no credentials, else a
    Secret: the one the spec names, or the copy of the operator's Redis URL the operator keeps
    in the model's namespace (`build_redis_secret`)."""
    if spec.transport.redis_url:
        url = spec.transport.redis_url
        return [{"name": "MOPAR_TRANSPORT", "value": url}, {"name": "MOPAR_ARTIFACTS", "value": url}]
    if spec.transport.secret_name:
        reference = {"name": spec.transport.secret_name, "key": spec.transport.secret_key}
    else:
        reference = {"name": redis_secret_name(owner["name"]), "key": "url"}
    source = {"valueFrom": {"secretKeyRef": reference}}
    return [{"name": "MOPAR_TRANSPORT", **source}, {"name": "MOPAR_ARTIFACTS", **source}]


def build_credentials(owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> list[Object]:
    """The Secret this model's pods read the operator's Redis URL from; none when the spec
    names a Redis of its own."""
    if spec.transport.redis_url or spec.transport.secret_name:
        return []
    return [build_redis_secret(owner, settings.redis_url)]


def build_redis_secret(owner: Mapping[str, Any], url: str) -> Object:
    """The operator's Redis URL, for this model's pods (when its spec names no Redis of its own)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(redis_secret_name(owner["name"]), owner, "credentials"),
        "type": "Opaque",
        # `data`, not `stringData`: servers store data, so a reapplied Secret compares equal.
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }


def _runtime_env(owner: Mapping[str, Any], spec: ModelSpec) -> list[dict[str, Any]]:
    t = spec.transport
    return [
        *transport_env(owner, spec),
        {"name": "MOPAR_NAMESPACE", "value": owner["namespace"]},
        {"name": "MOPAR_MANIFEST", "value": f"{MANIFEST_DIR}/{MANIFEST_KEY}"},
        {"name": "MOPAR_PORT", "value": str(PORT)},
        {"name": "MOPAR_THREADS", "value": str(spec.runtime.threads)},
        {"name": "MOPAR_CODEC", "value": t.codec},
        {"name": "MOPAR_COMPRESS_THRESHOLD", "value": str(t.compression_threshold_bytes)},
        {"name": "MOPAR_ACTIVATION_TTL", "value": str(t.activation_ttl_seconds)},
        {"name": "MOPAR_CACHE_DIR", "value": CACHE_DIR},
        {"name": "OMP_NUM_THREADS", "value": str(spec.runtime.threads)},
    ]


def _volumes(pm: str) -> list[dict[str, Any]]:
    return [
        {"name": "plan", "configMap": {"name": plan_configmap_name(pm)}},
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
    container = {
        "name": name,
        **_image(spec, settings),
        "args": list(args),
        "env": env,
        "ports": [{"name": "http1", "containerPort": PORT}],
        "resources": dict(resources),
        "readinessProbe": {"httpGet": {"path": ready, "port": PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": live, "port": PORT}, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": _security_context(),
        "volumeMounts": _mounts(),
    }
    return container


def slice_resources(unit: SliceUnit, spec: ModelSpec) -> dict[str, Any]:
    """Right-sized from the plan: the slice's memory, one CPU per onnxruntime thread."""
    amounts = {"cpu": str(spec.runtime.threads), "memory": f"{unit.memory_mb}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def gateway_resources(spec: ModelSpec) -> dict[str, Any]:
    return dict(
        spec.runtime.gateway_resources
        or {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    )


def _pod_spec(container: dict[str, Any], pm: str) -> dict[str, Any]:
    return {
        "containers": [container],
        "volumes": _volumes(pm),
        "securityContext": _pod_security_context(),
        "automountServiceAccountToken": False,
    }


# -- autoscaling --------------------------------------------------------------------------
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


# -- Knative path -----------------------------------------------------------------------------
def build_knative_service(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
    spec: ModelSpec,
    concurrency: int,
    slice_id: str | None = None,
) -> Object:
    metadata = _metadata(name, owner, component, slice_id)
    if component == "slice":  # slices are reached by the gateway only
        metadata["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {
                    "labels": labels(owner["name"], component, slice_id),
                    "annotations": autoscaling_annotations(spec),
                },
                "spec": {**_pod_spec(container, owner["name"]), "containerConcurrency": concurrency},
            }
        },
    }


def slice_container(unit: SliceUnit, owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> dict:
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


def slice_url(owner: Mapping[str, Any], unit: SliceUnit, settings: OperatorSettings) -> str:
    # Both a Knative Service and a plain Service answer on port 80 at their cluster DNS name.
    return f"http://{slice_name(owner['name'], unit.id)}.{owner['namespace']}.svc.{settings.cluster_domain}"


# -- Deployment path --------------------------------------------------------------------------
def _selector(owner: Mapping[str, Any], component: str, slice_id: str | None) -> dict[str, str]:
    """The labels that pick one function's pods (its Deployment's and its Service's selector)."""
    selector = {"app.kubernetes.io/instance": owner["name"], "app.kubernetes.io/component": component}
    if slice_id is not None:
        selector["mopar.dev/slice"] = slice_id.replace(".", "-")
    return selector


def build_deployment(
    name: str,
    owner: Mapping[str, Any],
    component: str,
    container: dict[str, Any],
    slice_id: str | None = None,
) -> Object:
    selector = _selector(owner, component, slice_id)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, owner, component, slice_id),
        "spec": {
            # No `replicas`: the HPA owns the count (its minReplicas is the floor); stating one here
            # would scale the Deployment back down on every reconcile.
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels(owner["name"], component, slice_id)},
                "spec": _pod_spec(container, owner["name"]),
            },
        },
    }


def build_service(name: str, owner: Mapping[str, Any], component: str, slice_id: str | None = None) -> Object:
    selector = _selector(owner, component, slice_id)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, owner, component, slice_id),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
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
        "metadata": _metadata(name, owner, component, slice_id),
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


# -- everything ---------------------------------------------------------------------------------
def build_serving(
    owner: Mapping[str, Any], spec: ModelSpec, units: Sequence[SliceUnit], serving: str, settings: OperatorSettings
) -> list[Object]:
    """The objects that serve a prepared model: per slice and for the gateway."""
    objects: list[Object] = []
    pm = owner["name"]
    for unit in units:
        name, container = slice_name(pm, unit.id), slice_container(unit, owner, spec, settings)
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
    name, container = gateway_name(pm, serving), gateway_container(units, owner, spec, settings)
    if serving == KNATIVE:
        objects.append(build_knative_service(name, owner, "gateway", container, spec, 0))
    else:
        objects += [
            build_deployment(name, owner, "gateway", container),
            build_service(name, owner, "gateway"),
            build_hpa(name, owner, "gateway", spec),
        ]
    return objects


def build_prepare_job(owner: Mapping[str, Any], spec: ModelSpec, settings: OperatorSettings) -> Object:
    """The Job that fetches, profiles, plans and slices the model and stores the slice files and
    the manifest in the artifact store (`mopar prepare`). It needs no Kubernetes API access."""
    pm = owner["name"]
    env = [
        *transport_env(owner, spec),
        {"name": "MOPAR_PM_NAME", "value": pm},
        {"name": "MOPAR_PM_NAMESPACE", "value": owner["namespace"]},
        {"name": "MOPAR_SPEC", "value": _json(spec.to_json())},
        {"name": "MOPAR_CACHE_DIR", "value": CACHE_DIR},
    ]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    source = spec.storage_uri.split("://", 1)[1].split("/", 1)[0]
    if spec.scheme == "pvc":
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": source, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": f"{PVC_MOUNT_ROOT}/{source}", "readOnly": True})
    elif spec.scheme == "configmap":
        volumes.append({"name": "model", "configMap": {"name": source}})
        mounts.append({"name": "model", "mountPath": f"{CONFIGMAP_MOUNT_ROOT}/{source}", "readOnly": True})
    resources = dict(
        spec.runtime.prepare_resources
        or {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **_metadata(prepare_job_name(pm, spec), owner, "prepare"),
            "annotations": {HASH_ANNOTATION: spec.prepare_hash()},
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels(pm, "prepare")},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security_context(),
                    "containers": [
                        {
                            "name": "prepare",
                            **_image(spec, settings),
                            "args": ["prepare"],
                            "env": env,
                            "resources": resources,
                            "securityContext": _security_context(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def build_plan_configmap(owner: Mapping[str, Any], manifest_json: str, prepare_hash: str) -> Object:
    metadata = _metadata(plan_configmap_name(owner["name"]), owner, "plan")
    metadata["labels"][PLAN_LABEL] = "true"
    metadata["annotations"] = {HASH_ANNOTATION: prepare_hash}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {MANIFEST_KEY: manifest_json}}


def endpoint(
    owner: Mapping[str, Any], spec: ModelSpec, serving: str, settings: OperatorSettings, knative_url: str | None = None
) -> str:
    """The V2 infer URL of the model (the Knative route's URL where Knative reports one)."""
    base = knative_url or (
        f"http://{gateway_name(owner['name'], serving)}.{owner['namespace']}.svc.{settings.cluster_domain}"
    )
    return f"{base}/v2/models/{spec.served_name}/infer"


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True, separators=(",", ":"))
