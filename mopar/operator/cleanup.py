"""Deleting a PartitionedModel: its tensors and the slice files no other model uses leave Redis
(its Kubernetes children go by owner reference)."""

from __future__ import annotations

import asyncio
import logging

from mopar.errors import SpecError
from mopar.operator import names
from mopar.operator.kube import CONFIGMAPS
from mopar.operator.reconcile import Context, redis_url
from mopar.operator.spec import parse
from slice_runtime import manifest as manifests
from slice_runtime.errors import ManifestError, TransportError
from slice_runtime.store import open_transport
from slice_runtime.store.artifacts import ArtifactStore

log = logging.getLogger("mopar.operator")


async def clean_up(ctx: Context) -> None:
    try:
        spec = parse(ctx.body.get("spec"), ctx.name)
    except SpecError:
        return  # it never ran: nothing of it is stored
    url = await redis_url(ctx, spec)
    ours: set[str] = set()  # sha256s of this model's files
    others: set[str] = set()  # and of every other model's, which may share some
    for plan in await ctx.kube.list(CONFIGMAPS, ctx.namespace, {names.PLAN_LABEL: "true"}):
        try:
            digests = manifests.loads(plan.get("data", {}).get(names.MANIFEST_KEY, "")).digests()
        except ManifestError:
            continue  # a broken plan holds no files we could name
        (ours if plan["metadata"]["name"] == names.plan_configmap_name(ctx.name) else others).update(digests)

    def delete_files() -> None:
        with ArtifactStore(url, ctx.namespace) as store:
            for digest in {*(ours - others), *store.delete_names(names.manifest_artifact(ctx.name, ""))}:
                store.delete(digest)

    try:
        transport = open_transport(url, ctx.namespace, spec.served_name)
        try:
            purged = await transport.purge()
        finally:
            await transport.close()
        await asyncio.to_thread(delete_files)  # the artifact store's client blocks
    except TransportError as error:
        raise ctx.temporary(f"cannot clean Redis up yet: {error}") from None
    log.info(
        "%s/%s: removed %d stored tensor(s) and %d slice file(s)", ctx.namespace, ctx.name, purged, len(ours - others)
    )
