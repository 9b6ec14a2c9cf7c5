"""Keeping a deployed model's readiness current: per-slice ready replicas, the endpoint and the
Ready condition, from one list of the model's functions per check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from mopar.operator import names, status
from mopar.operator.kube import CONFIGMAPS, DEPLOYMENTS, KSERVICES
from mopar.operator.reconcile import Context
from mopar.operator.serving import urls
from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec
from mopar.operator.units import units_from_manifest
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError


async def check(ctx: Context, spec: ModelSpec) -> None:
    """For a model in one of `DEPLOYED_PHASES` with this (parsed) spec."""
    serving = ctx.current.get("serving")
    if serving is None:
        return
    plan = await ctx.kube.get(CONFIGMAPS, ctx.namespace, names.plan_configmap_name(ctx.name))
    if plan is None:
        return
    try:
        manifest = manifests.loads(plan["data"][names.MANIFEST_KEY], f"ConfigMap {plan['metadata']['name']}")
    except (KeyError, ManifestError):
        return  # the next reconcile rewrites it
    units = units_from_manifest(manifest)
    # One list per check, not a read per function: the check runs for every model every few seconds.
    functions = KSERVICES if serving == KNATIVE else DEPLOYMENTS
    listed = await ctx.kube.list(functions, ctx.namespace, {names.INSTANCE_LABEL: ctx.name})
    by_name = {f["metadata"]["name"]: f for f in listed}
    ready = {u.id: ready_replicas(by_name.get(names.slice_name(ctx.name, u.id)), serving) for u in units}
    gateway = by_name.get(names.gateway_name(ctx.name, serving))
    gateway_ready = ready_replicas(gateway, serving)
    url = (gateway or {}).get("status", {}).get("url") if serving == KNATIVE else None
    waiting = sorted(sid for sid, n in ready.items() if n < 1) + ([] if gateway_ready else ["gateway"])
    if spec.runtime.gateway.grpc and serving == KNATIVE:  # gRPC has a Knative Service of its own
        if not ready_replicas(by_name.get(names.grpc_gateway_name(ctx.name)), serving):
            waiting.append("the gRPC gateway")
    all_ready = not waiting
    was_ready = (status.condition(ctx.current, "Ready") or {}).get("status") == "True"
    ctx.write_status(
        "Ready" if all_ready else ("Degraded" if was_ready else "Deploying"),
        {
            "Ready": ("True", "SlicesReady", "every slice and the gateway serve")
            if all_ready
            else ("False", "SlicesNotReady", f"waiting for {', '.join(waiting)}")
        },
        {
            "slices": status.slices_status(manifest, ready),
            **urls(ctx.owner, spec, serving, ctx.settings, url),
        },
        observed=False,
    )
    if all_ready and not was_ready:
        kopf.event(ctx.body, type="Normal", reason="Ready", message=f"serving at {ctx.current['endpoint']}")


def ready_replicas(function: Mapping[str, Any] | None, serving: str) -> int:
    """Ready replicas of a Deployment; of a Knative Service, 1 when Ready (Knative reports
    readiness, not replica counts; a Ready service serves at least one)."""
    observed = (function or {}).get("status", {})
    if serving == DEPLOYMENT:
        return int(observed.get("readyReplicas") or 0)
    return int((status.condition(observed, "Ready") or {}).get("status") == "True")
