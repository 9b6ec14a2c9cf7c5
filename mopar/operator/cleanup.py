"""Deleting a PartitionedModel: every key of its scope leaves Redis (activations, slice files,
the published manifest) and so does its Redis user; its Kubernetes children go by owner
reference."""

from __future__ import annotations

import logging

from mopar.errors import SpecError
from mopar.operator import names, redisadmin
from mopar.operator.credentials import uses_operator_redis
from mopar.operator.reconcile import Context, redis_url
from mopar.operator.spec import parse
from slice_runtime.errors import TransportError

log = logging.getLogger("mopar.operator")


async def clean_up(ctx: Context) -> None:
    try:
        spec = parse(ctx.body.get("spec"), ctx.name)
    except SpecError:
        return  # it never ran: nothing of it is stored
    try:
        # With the operator's own credentials where they apply: the model's user may be gone.
        removed = await redisadmin.purge(await redis_url(ctx, spec), ctx.owner)
        if uses_operator_redis(spec) and ctx.settings.redis_acl:
            await redisadmin.remove_user(ctx.settings.redis_url, ctx.owner)
    except TransportError as error:
        raise ctx.temporary(f"cannot clean Redis up yet: {error}") from None
    log.info("%s/%s: removed %d key(s) of scope %s", ctx.namespace, ctx.name, removed, names.store_scope(ctx.owner))
