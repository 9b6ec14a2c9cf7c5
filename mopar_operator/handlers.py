"""`mopar operator`: the Kopf handlers of PartitionedModel. Thin: parse, build, apply, report.

One idempotent reconcile serves create, resume and spec updates:
  1. parse the spec; a bad one gets a Ready=False condition, a warning Event and a
     PermanentError (no retry loop);
  2. make sure the plan ConfigMap answers this spec's prepare hash, else run (or wait
     for) the prepare Job of that hash, retrying with a delay until it is done;
  3. build the serving objects (Knative Services, or Deployments, Services and HPAs when
     discovery shows no serving.knative.dev/v1) and create-or-patch each, owned by the
     PartitionedModel; delete slices a new plan no longer has;
  4. write the status. A timer keeps per-slice readiness and the Ready condition current.
A change of the model or the objective changes the prepare hash: re-prepare, roll the
slices. A change of autoscaling only patches the services. Deleting the model removes
its tensors and slice files from Redis; its children go by owner reference.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import Counter, Histogram, start_http_server

from slice_runtime.artifacts import ArtifactStore
from slice_runtime.errors import TransportError
from slice_runtime.transports import open_transport

from . import manifests, status
from .kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    HPAS,
    JOBS,
    KSERVICES,
    SECRETS,
    SERVICES,
    KubeClient,
    KubeError,
)
from .prepare import manifest_name
from .settings import OperatorSettings
from .spec import GROUP, PLURAL, VERSION, ModelSpec, SpecError, parse

# The readiness timer's interval is fixed when the handlers are registered, at import.
POLL_SECONDS = OperatorSettings.from_env().poll_seconds
log = logging.getLogger("mopar.operator")

RECONCILE_SECONDS = Histogram(
    "mopar_operator_reconcile_seconds",
    "Time of one reconcile of a PartitionedModel (waiting for a Job excluded).",
    ["namespace"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECONCILE_ERRORS = Counter(
    "mopar_operator_reconcile_errors_total",
    "Reconciles that failed: the spec (invalid), the prepare Job (prepare_failed), or anything else (error).",
    ["namespace", "reason"],
)
_metrics_server_started = False


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "mopar.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mopar.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="mopar.dev")
    # Log lines become Events from warnings up; our own Normal Events go out explicitly (kopf.event).
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.kube = KubeClient.from_environment()
    memo.settings = OperatorSettings.from_env()
    memo.knative = None  # discovered on first use
    global _metrics_server_started
    port = os.environ.get("MOPAR_METRICS_PORT")
    if port and not _metrics_server_started:  # one per process, even if the operator restarts in it
        start_http_server(int(port))
        _metrics_server_started = True


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    server = os.environ.get("MOPAR_KUBE_SERVER")
    if server:  # an explicit API server (tests point it at the emulated API)
        return kopf.ConnectionInfo(server=server, insecure=True)
    return kopf.login_via_client(**kwargs)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    body: kopf.Body, patch: kopf.Patch, name: str, namespace: str, uid: str, memo: kopf.Memo, **_: Any
) -> str:
    started = time.perf_counter()
    try:
        message = await _reconcile(body, patch, name, namespace, uid, memo)
    except (kopf.TemporaryError, kopf.PermanentError):
        raise  # waiting for the prepare Job is no failure; permanent ones are counted where raised
    except Exception:
        RECONCILE_ERRORS.labels(namespace=namespace, reason="error").inc()
        raise
    RECONCILE_SECONDS.labels(namespace=namespace).observe(time.perf_counter() - started)
    return message


async def _reconcile(body: kopf.Body, patch: kopf.Patch, name: str, namespace: str, uid: str, memo: kopf.Memo) -> str:
    owner = {"name": name, "namespace": namespace, "uid": uid}
    kube: KubeClient = memo.kube
    settings: OperatorSettings = memo.settings
    current = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    try:
        spec = parse(body.get("spec"), name)
    except SpecError as error:
        _write_status(
            patch,
            current,
            phase="Failed",
            observed=generation,
            conditions={"Ready": ("False", "InvalidSpec", str(error))},
        )
        kopf.event(body, type="Warning", reason="InvalidSpec", message=str(error))
        RECONCILE_ERRORS.labels(namespace=namespace, reason="invalid").inc()
        raise kopf.PermanentError(str(error)) from None

    manifest = await _prepared(kube, settings, owner, spec, body, patch, current, generation)
    serving = await _serving(kube, spec, memo)
    units = manifests.units_from_manifest(manifest)
    desired = [
        *manifests.build_credentials(owner, spec, settings),
        *manifests.build_serving(owner, spec, units, serving, settings),
    ]
    outcomes = [await kube.apply(obj) for obj in desired]
    removed = await _remove_stale(kube, owner, desired)
    changed = {o: outcomes.count(o) for o in ("created", "patched") if outcomes.count(o)}
    if changed or removed:
        summary = ", ".join(f"{n} {o}" for o, n in changed.items()) + (f", {removed} removed" if removed else "")
        kopf.event(
            body, type="Normal", reason="Deployed", message=f"{len(units)} slice function(s) via {serving}: {summary}"
        )
    message = f"{len(units)} slice function(s) and the gateway deployed via {serving}"
    _write_status(
        patch,
        current,
        phase=current.get("phase") if current.get("phase") == "Ready" else "Deploying",
        observed=generation,
        conditions={"Deployed": ("True", "Applied", message)},
        extra={
            "serving": serving,
            "sliceCount": len(units),
            # ready replicas as the readiness timer last saw them, until it looks again
            "slices": status.slices_status(
                manifest, {s["name"]: s.get("readyReplicas", 0) for s in current.get("slices", [])}
            ),
            "predicted": status.predicted(manifest),
            "endpoint": manifests.endpoint(owner, spec, serving, settings),
        },
    )
    return message


async def _prepared(
    kube: KubeClient,
    settings: OperatorSettings,
    owner: Mapping[str, str],
    spec: ModelSpec,
    body: kopf.Body,
    patch: kopf.Patch,
    current: dict[str, Any],
    generation: int | None,
) -> dict[str, Any]:
    """The manifest prepared for this spec, or TemporaryError while its prepare Job runs."""
    want = spec.prepare_hash()
    plan = await kube.get(CONFIGMAPS, owner["namespace"], manifests.plan_configmap_name(owner["name"]))
    if plan and plan.get("metadata", {}).get("annotations", {}).get(manifests.HASH_ANNOTATION) == want:
        manifest = json.loads(plan["data"][manifests.MANIFEST_KEY])
        if (status.condition(current, "Sliced") or {}).get("status") != "True":
            plan_figures = manifest.get("plan", {})
            _write_status(
                patch,
                current,
                phase="Deploying",
                observed=generation,
                conditions={
                    "Profiled": (
                        "True",
                        "Profiled",
                        f"{plan_figures.get('graph', {}).get('nodes', '?')} nodes profiled",
                    ),
                    "Planned": (
                        "True",
                        "Planned",
                        f"{len(plan_figures.get('slices', []))} slice(s), objective "
                        f"{plan_figures.get('objective')}, pricing {plan_figures.get('pricing', {}).get('name')}",
                    ),
                    "Sliced": ("True", "Sliced", f"{len(manifest['slices'])} slice file(s) in the artifact store"),
                },
            )
        return manifest  # type: ignore[no-any-return]

    for credentials in manifests.build_credentials(owner, spec, settings):  # the Job reads them
        await kube.apply(credentials)
    job = manifests.build_prepare_job(owner, spec, settings)
    job_name = job["metadata"]["name"]
    existing = await kube.get(JOBS, owner["namespace"], job_name)
    if existing is None:
        await kube.create(JOBS, owner["namespace"], job)
        kopf.event(
            body, type="Normal", reason="Preparing", message=f"started prepare Job {job_name} for {spec.storage_uri}"
        )
    else:
        job_status = existing.get("status", {})
        failed = status.condition(job_status, "Failed")
        if failed and failed.get("status") == "True":
            message = (
                f"prepare Job {job_name} failed: {failed.get('message') or failed.get('reason') or 'see its logs'}"
            )
            _write_status(
                patch,
                current,
                phase="Failed",
                observed=generation,
                conditions={
                    "Ready": ("False", "PrepareFailed", message),
                    **{c: ("False", "PrepareFailed", message) for c in status.PREPARED},
                },
            )
            kopf.event(body, type="Warning", reason="PrepareFailed", message=message)
            RECONCILE_ERRORS.labels(namespace=owner["namespace"], reason="prepare_failed").inc()
            raise kopf.PermanentError(message)
        if job_status.get("succeeded"):
            published = await _published_manifest(kube, spec, owner, settings)
            if published is not None:
                await kube.apply(manifests.build_plan_configmap(owner, published, want))
                return await _prepared(kube, settings, owner, spec, body, patch, current, generation)
    waiting = f"prepare Job {job_name} is profiling, planning and slicing the model"
    _write_status(
        patch,
        current,
        phase="Preparing",
        observed=generation,
        conditions={c: ("Unknown", "Preparing", waiting) for c in status.PREPARED}
        | {"Ready": ("False", "Preparing", waiting)},
    )
    raise kopf.TemporaryError(waiting, delay=settings.poll_seconds)


async def _published_manifest(
    kube: KubeClient, spec: ModelSpec, owner: Mapping[str, str], settings: OperatorSettings
) -> str | None:
    """The manifest the prepare Job published in the artifact store for this spec, if it did."""
    url = await _redis_url(kube, spec, owner["namespace"], settings)

    def read() -> str | None:
        with ArtifactStore(url, owner["namespace"]) as store:
            digest = store.resolve(manifest_name(owner["name"], spec.prepare_hash()))
            return store.get(digest).decode() if digest else None

    try:  # the artifact store's client blocks: off the event loop, which serves every model
        return await asyncio.to_thread(read)
    except TransportError as error:
        raise kopf.TemporaryError(f"cannot read the prepared plan: {error}", delay=settings.poll_seconds) from None


async def _serving(kube: KubeClient, spec: ModelSpec, memo: kopf.Memo) -> str:
    if spec.serving != "auto":
        return spec.serving
    if memo.knative is None:
        memo.knative = await kube.serves("serving.knative.dev", "v1")
    return manifests.KNATIVE if memo.knative else manifests.DEPLOYMENT


async def _remove_stale(kube: KubeClient, owner: Mapping[str, str], desired: list[dict[str, Any]]) -> int:
    """Delete serving objects of this model that the current plan (or serving mode) no longer has.

    Only objects the model owns: Knative copies a revision's labels, ours included, onto the
    Deployments and Services it makes for that revision, and those are Knative's to manage."""
    keep = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in desired}
    selector = {"app.kubernetes.io/instance": owner["name"]}
    removed = 0
    for resource in (KSERVICES, DEPLOYMENTS, SERVICES, HPAS):
        try:
            items = await kube.list(resource, owner["namespace"], selector)
        except KubeError as error:
            if error.status == 404:  # not served here (no Knative)
                continue
            raise
        for item in items:
            owned = any(r.get("uid") == owner["uid"] for r in item["metadata"].get("ownerReferences") or [])
            if owned and (resource.api_version, resource.kind, item["metadata"]["name"]) not in keep:
                removed += await kube.delete(resource, owner["namespace"], item["metadata"]["name"])
    return removed


def _write_status(
    patch: kopf.Patch,
    current: dict[str, Any],
    phase: str | None,
    observed: int | None,
    conditions: Mapping[str, tuple[str, str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Put the new status in Kopf's patch (applied with Kopf's own bookkeeping, in one request,
    whether the handler then returns or raises)."""
    new = dict(current)
    new["conditions"] = status.with_conditions(current.get("conditions"), conditions or {})
    if phase:
        new["phase"] = phase
    if observed is not None:
        new["observedGeneration"] = observed
    new.update(extra or {})
    for key, value in new.items():
        if current.get(key) != value:
            patch.status[key] = value
    current.clear()
    current.update(new)


@kopf.timer(GROUP, VERSION, PLURAL, interval=POLL_SECONDS, initial_delay=POLL_SECONDS)
async def readiness(
    body: kopf.Body, patch: kopf.Patch, name: str, namespace: str, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Keep per-slice ready replicas, the endpoint and the Ready condition current."""
    current = dict(body.get("status") or {})
    serving = current.get("serving")
    if current.get("phase") not in ("Deploying", "Ready", "Degraded") or serving is None:
        return
    kube: KubeClient = memo.kube
    owner = {"name": name, "namespace": namespace, "uid": uid}
    try:
        spec = parse(body.get("spec"), name)
    except SpecError:
        return
    plan = await kube.get(CONFIGMAPS, namespace, manifests.plan_configmap_name(name))
    if plan is None:
        return
    manifest = json.loads(plan["data"][manifests.MANIFEST_KEY])
    units = manifests.units_from_manifest(manifest)
    # One list per tick, not a read per function: the timer runs for every model every few seconds.
    functions = KSERVICES if serving == manifests.KNATIVE else DEPLOYMENTS
    listed = await kube.list(functions, namespace, {"app.kubernetes.io/instance": name})
    by_name = {f["metadata"]["name"]: f for f in listed}
    ready = {u.id: _ready_replicas(by_name.get(manifests.slice_name(name, u.id)), serving) for u in units}
    gateway = by_name.get(manifests.gateway_name(name, serving))
    gateway_ready = _ready_replicas(gateway, serving)
    url = (gateway or {}).get("status", {}).get("url") if serving == manifests.KNATIVE else None
    waiting = sorted(sid for sid, n in ready.items() if n < 1) + ([] if gateway_ready else ["gateway"])
    all_ready = not waiting
    was_ready = (status.condition(current, "Ready") or {}).get("status") == "True"
    _write_status(
        patch,
        current,
        phase="Ready" if all_ready else ("Degraded" if was_ready else "Deploying"),
        observed=None,
        conditions={
            "Ready": ("True", "SlicesReady", "every slice and the gateway serve")
            if all_ready
            else ("False", "SlicesNotReady", f"waiting for {', '.join(waiting)}")
        },
        extra={
            "slices": status.slices_status(manifest, ready),
            "endpoint": manifests.endpoint(owner, spec, serving, memo.settings, url),
        },
    )
    if all_ready and not was_ready:
        kopf.event(body, type="Normal", reason="Ready", message=f"serving at {current['endpoint']}")


def _ready_replicas(function: Mapping[str, Any] | None, serving: str) -> int:
    """Ready replicas of a Deployment; of a Knative Service, 1 when Ready (Knative reports
    readiness, not replica counts; a Ready service serves at least one)."""
    observed = (function or {}).get("status", {})
    if serving == manifests.DEPLOYMENT:
        return int(observed.get("readyReplicas") or 0)
    return int((status.condition(observed, "Ready") or {}).get("status") == "True")


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def cleanup(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Remove the model's tensors and its slice files (those no other model uses) from Redis."""
    kube: KubeClient = memo.kube
    try:
        spec = parse(body.get("spec"), name)
    except SpecError:
        return  # it never ran: nothing of it is stored
    url = await _redis_url(kube, spec, namespace, memo.settings)
    plans = await kube.list(CONFIGMAPS, namespace, {manifests.PLAN_LABEL: "true"})
    ours, others = set(), set()
    for plan in plans:
        manifest = json.loads(plan.get("data", {}).get(manifests.MANIFEST_KEY, '{"slices": []}'))
        digests = {d for s in manifest.get("slices", []) for d in (s.get("sha256"), s.get("data_sha256")) if d}
        (ours if plan["metadata"]["name"] == manifests.plan_configmap_name(name) else others).update(digests)

    def delete_files() -> None:
        with ArtifactStore(url, namespace) as store:
            for digest in {*(ours - others), *store.delete_names(manifest_name(name, ""))}:
                store.delete(digest)

    try:
        transport = open_transport(url, namespace, spec.served_name)
        try:
            purged = await transport.purge()
        finally:
            await transport.close()
        await asyncio.to_thread(delete_files)  # the artifact store's client blocks
    except TransportError as error:
        raise kopf.TemporaryError(f"cannot clean Redis up yet: {error}", delay=memo.settings.poll_seconds) from None
    logger.info("removed %d stored tensor(s) and %d slice file(s)", purged, len(ours - others))


async def _redis_url(kube: KubeClient, spec: ModelSpec, namespace: str, settings: OperatorSettings) -> str:
    if spec.transport.redis_url:
        return spec.transport.redis_url
    if spec.transport.secret_name:
        name, key = spec.transport.secret_name, spec.transport.secret_key
        secret = await kube.get(SECRETS, namespace, name)
        if secret is None or key not in secret.get("data", {}):
            raise kopf.TemporaryError(f"Secret {name!r} with key {key!r} not found", delay=settings.poll_seconds)
        return base64.b64decode(secret["data"][key]).decode()
    return settings.redis_url
