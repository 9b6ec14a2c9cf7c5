"""One reconcile of a PartitionedModel, for create, resume and spec updates (idempotent).

  1. parse the spec and check it against the serving path; a bad one gets a Ready=False
     condition, a warning Event and a PermanentError (no retry loop);
  2. give the model its Redis user (`tenancy`) and the Secret its pods read its URL from;
  3. make sure the plan ConfigMap answers this spec's prepare hash, else run (or wait
     for) the prepare Job of that hash, retrying with a delay until it is done;
  4. build the serving objects (Knative Services, or Deployments, Services and HPAs when
     discovery shows no serving.knative.dev/v1) and create-or-patch each, owned by the
     PartitionedModel; delete slices a new plan no longer has;
  5. write the status.
A change of the model or the objective changes the prepare hash: re-prepare, roll the
slices. A change of autoscaling only patches the services.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from mopar.errors import KubeNotFound, SpecError
from mopar.operator import metrics, names, redisadmin, status, tenancy
from mopar.operator.credentials import build_credentials, uses_operator_redis
from mopar.operator.jobs import build_prepare_job
from mopar.operator.kube import CONFIGMAPS, DEPLOYMENTS, HPAS, JOBS, KSERVICES, SECRETS, SERVICES, KubeClient
from mopar.operator.serving import build_plan_configmap, build_serving, urls
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import DEPLOYMENT, KNATIVE, ModelSpec, parse
from mopar.operator.units import units_from_manifest
from mopar.plan import planfile
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError, TransportError
from slice_runtime.store.artifacts import ArtifactStore

log = logging.getLogger(__name__)
DEPLOYED_PHASES = ("Deploying", "Ready", "Degraded")  # the model has its Redis user from here on


class Context:
    """What one handler call works with: the model, the API client, the operator's settings and
    the status as it stands (updated as the reconcile writes to Kopf's patch)."""

    def __init__(self, body: kopf.Body, patch: kopf.Patch, owner: Mapping[str, str], memo: kopf.Memo) -> None:
        self.body, self.patch, self.owner, self.memo = body, patch, dict(owner), memo
        self.kube: KubeClient = memo.kube
        self.settings: OperatorSettings = memo.settings
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.generation: int | None = body.get("metadata", {}).get("generation")

    @property
    def name(self) -> str:
        return self.owner["name"]

    @property
    def namespace(self) -> str:
        return self.owner["namespace"]

    def write_status(
        self,
        phase: str | None,
        conditions: Mapping[str, tuple[str, str, str]] | None = None,
        extra: Mapping[str, Any] | None = None,
        observed: bool = True,
    ) -> None:
        status.write(self.patch.status, self.current, phase, self.generation if observed else None, conditions, extra)

    def temporary(self, message: str) -> kopf.TemporaryError:
        return kopf.TemporaryError(message, delay=self.settings.poll_seconds)


async def reconcile(ctx: Context) -> str:
    try:
        spec = parse(ctx.body.get("spec"), ctx.name)
        serving = await serving_mode(ctx, spec)
        spec.check_serving(serving)
    except SpecError as error:
        ctx.write_status("Failed", {"Ready": ("False", "InvalidSpec", str(error))})
        kopf.event(ctx.body, type="Warning", reason="InvalidSpec", message=str(error))
        metrics.reconcile_error(ctx.owner, "invalid")
        raise kopf.PermanentError(str(error)) from None

    await ensure_credentials(ctx, spec)
    manifest = await prepared(ctx, spec)
    units = units_from_manifest(manifest)
    desired = build_serving(ctx.owner, spec, units, serving, ctx.settings)
    outcomes = [await ctx.kube.apply(obj) for obj in desired]
    removed = await remove_stale(ctx, desired)
    changed = {o: outcomes.count(o) for o in ("created", "patched") if outcomes.count(o)}
    if changed or removed:
        summary = ", ".join(f"{n} {o}" for o, n in changed.items()) + (f", {removed} removed" if removed else "")
        message = f"{len(units)} slice function(s) via {serving}: {summary}"
        kopf.event(ctx.body, type="Normal", reason="Deployed", message=message)
    message = f"{len(units)} slice function(s) and the gateway deployed via {serving}"
    ready_before = {s["name"]: s.get("readyReplicas", 0) for s in ctx.current.get("slices", [])}
    # Knative's route URL as the readiness check last read it, until it reads it again.
    known_url = ctx.current.get("url") if serving == KNATIVE and ctx.current.get("serving") == KNATIVE else None
    ctx.write_status(
        ctx.current.get("phase") if ctx.current.get("phase") == "Ready" else "Deploying",
        {"Deployed": ("True", "Applied", message)},
        {
            "serving": serving,
            "sliceCount": len(units),
            # ready replicas as the readiness check last saw them, until it looks again
            "slices": status.slices_status(manifest, ready_before),
            "predicted": status.predicted(manifest),
            **urls(ctx.owner, spec, serving, ctx.settings, known_url),
        },
    )
    return message


async def prepared(ctx: Context, spec: ModelSpec) -> manifests.Manifest:
    """The manifest prepared for this spec, or TemporaryError while its prepare Job runs."""
    want = spec.prepare_hash()
    plan = await ctx.kube.get(CONFIGMAPS, ctx.namespace, names.plan_configmap_name(ctx.name))
    if plan and plan.get("metadata", {}).get("annotations", {}).get(names.HASH_ANNOTATION) == want:
        manifest = manifests.loads(plan["data"][names.MANIFEST_KEY], f"ConfigMap {plan['metadata']['name']}")
        if (status.condition(ctx.current, "Sliced") or {}).get("status") != "True":
            summary = planfile.summary(manifest.plan)
            planned = f"{summary.slices} slice(s), objective {summary.objective}, pricing {summary.pricing}"
            ctx.write_status(
                "Deploying",
                {
                    "Profiled": (
                        "True",
                        "Profiled",
                        f"{summary.nodes if summary.nodes is not None else '?'} nodes profiled",
                    ),
                    "Planned": ("True", "Planned", planned),
                    "Sliced": ("True", "Sliced", f"{len(manifest.slices)} slice file(s) in the artifact store"),
                },
            )
        return manifest

    job = build_prepare_job(ctx.owner, spec, ctx.settings)
    job_name = job["metadata"]["name"]
    existing = await ctx.kube.get(JOBS, ctx.namespace, job_name)
    if existing is None:
        await ctx.kube.create(JOBS, ctx.namespace, job)
        message = f"started prepare Job {job_name} for {spec.storage_uri}"
        kopf.event(ctx.body, type="Normal", reason="Preparing", message=message)
    else:
        job_status = existing.get("status", {})
        failed = status.condition(job_status, "Failed")
        if failed and failed.get("status") == "True":
            why = failed.get("message") or failed.get("reason") or "see its logs"
            message = f"prepare Job {job_name} failed: {why}"
            ctx.write_status(
                "Failed",
                {
                    "Ready": ("False", "PrepareFailed", message),
                    **dict.fromkeys(status.PREPARED, ("False", "PrepareFailed", message)),
                },
            )
            kopf.event(ctx.body, type="Warning", reason="PrepareFailed", message=message)
            metrics.reconcile_error(ctx.owner, "prepare_failed")
            raise kopf.PermanentError(message)
        if job_status.get("succeeded"):
            published = await published_manifest(ctx, spec)
            if published is not None:
                await ctx.kube.apply(build_plan_configmap(ctx.owner, published, want))
                return await prepared(ctx, spec)
    waiting = f"prepare Job {job_name} is profiling, planning and slicing the model"
    ctx.write_status(
        "Preparing",
        dict.fromkeys(status.PREPARED, ("Unknown", "Preparing", waiting)) | {"Ready": ("False", "Preparing", waiting)},
    )
    raise ctx.temporary(waiting)


async def published_manifest(ctx: Context, spec: ModelSpec) -> str | None:
    """The manifest the prepare Job published in the artifact store for this spec, if it did."""
    url = await redis_url(ctx, spec)
    artifact = names.manifest_artifact(ctx.name, spec.prepare_hash())

    def read() -> str | None:
        with ArtifactStore(url, names.store_scope(ctx.owner)) as store:
            digest = store.resolve(artifact)
            return store.get(digest).decode() if digest else None

    try:  # the artifact store's client blocks: off the event loop, which serves every model
        text = await asyncio.to_thread(read)
    except TransportError as error:
        raise ctx.temporary(f"cannot read the prepared plan: {error}") from None
    if text is not None:
        try:
            manifests.loads(text, f"artifact {artifact}")
        except ManifestError as error:
            raise ctx.temporary(str(error)) from None
    return text


async def ensure_credentials(ctx: Context, spec: ModelSpec) -> None:
    """The model's Redis user on the operator's Redis and the Secret with its URL (which the
    prepare Job and every pod read); nothing when the spec names a Redis of its own."""
    if not uses_operator_redis(spec):
        return
    if ctx.settings.redis_acl:
        try:
            await redisadmin.ensure_user(ctx.settings.redis_url, ctx.owner)
        except TransportError as error:
            raise ctx.temporary(f"cannot give the model its Redis user yet: {error}") from None
    for secret in build_credentials(ctx.owner, spec, ctx.settings):
        await ctx.kube.apply(secret)


async def restore_credentials(ctx: Context, spec: ModelSpec) -> None:
    """The model's Redis user again, with a warning Event, if the operator's Redis lost it (see
    `redisadmin.restore_user`); a check of every model in `DEPLOYED_PHASES` at each readiness
    interval. An unreachable Redis is not this check's to report: the gateway's readiness says so."""
    if not ctx.settings.redis_acl or not uses_operator_redis(spec) or _deleting(ctx):
        return
    try:
        restored = await redisadmin.restore_user(ctx.settings.redis_url, ctx.owner)
        # Timers outlive the delete handler (Kopf stops them after it), and the body is live: a
        # user made again just after that handler removed it goes again.
        if restored and _deleting(ctx):
            await redisadmin.remove_user(ctx.settings.redis_url, ctx.owner)
            return
    except TransportError as error:
        log.info("%s/%s: Redis user not checked: %s", ctx.namespace, ctx.name, error)
        return
    if restored:
        message = f"Redis had lost the model's user {tenancy.user(ctx.owner)} (restarted?); it is back"
        kopf.event(ctx.body, type="Warning", reason="RedisUserRestored", message=message)


def _deleting(ctx: Context) -> bool:
    return bool(ctx.body.get("metadata", {}).get("deletionTimestamp"))


async def serving_mode(ctx: Context, spec: ModelSpec) -> str:
    if spec.serving != "auto":
        return spec.serving
    if ctx.memo.knative is None:  # discovered on first use, once per operator
        ctx.memo.knative = await ctx.kube.serves("serving.knative.dev", "v1")
    return KNATIVE if ctx.memo.knative else DEPLOYMENT


async def remove_stale(ctx: Context, desired: list[dict[str, Any]]) -> int:
    """Delete serving objects of this model that the current plan (or serving mode) no longer has.

    Only objects the model owns: Knative copies a revision's labels, ours included, onto the
    Deployments and Services it makes for that revision, and those are Knative's to manage."""
    keep = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in desired}
    selector = {names.INSTANCE_LABEL: ctx.name}
    removed = 0
    for resource in (KSERVICES, DEPLOYMENTS, SERVICES, HPAS):
        try:
            items = await ctx.kube.list(resource, ctx.namespace, selector)
        except KubeNotFound:  # not served here (no Knative)
            continue
        for item in items:
            owned = any(r.get("uid") == ctx.owner["uid"] for r in item["metadata"].get("ownerReferences") or [])
            if owned and (resource.api_version, resource.kind, item["metadata"]["name"]) not in keep:
                removed += await ctx.kube.delete(resource, ctx.namespace, item["metadata"]["name"])
    return removed


async def redis_url(ctx: Context, spec: ModelSpec) -> str:
    """The Redis this model's tensors and slice files live in."""
    if spec.transport.redis_url:
        return spec.transport.redis_url
    if spec.transport.secret_name:
        name, key = spec.transport.secret_name, spec.transport.secret_key
        secret = await ctx.kube.get(SECRETS, ctx.namespace, name)
        if secret is None or key not in secret.get("data", {}):
            raise ctx.temporary(f"Secret {name!r} with key {key!r} not found")
        return base64.b64decode(secret["data"][key]).decode()
    return ctx.settings.redis_url
