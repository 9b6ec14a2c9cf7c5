"""The Kopf handlers of PartitionedModel: thin entry points into `reconcile`, `readiness` and
`cleanup`, with the operator's settings read when it starts.

A reconcile serves create, resume and spec updates; a timer keeps per-slice readiness and
the Ready condition current (its interval is the settings' `poll_seconds`, so it is
registered at start-up, once per process); deleting a model removes its tensors and slice
files from Redis. The handlers read plan and manifest files only: neither onnx nor
onnxruntime is loaded in the operator's process.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import kopf

from mopar.errors import SpecError
from mopar.operator import cleanup, metrics, names, readiness
from mopar.operator import reconcile as reconciling
from mopar.operator.kube import KubeClient
from mopar.operator.reconcile import Context
from mopar.operator.settings import OperatorSettings
from mopar.operator.spec import GROUP, PLURAL, VERSION, parse


def _context(
    body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None, uid: str, memo: kopf.Memo
) -> Context:
    # Kopf's handler signature allows no namespace (cluster-scoped kinds); a PartitionedModel
    # is namespaced (crds/partitionedmodel.yaml), so kopf always passes one.
    if namespace is None:
        raise kopf.PermanentError(f"PartitionedModel {name} has no namespace")
    return Context(body, patch, {"name": name, "namespace": namespace, "uid": uid}, memo)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=names.PREFIX)
    # Log lines become Events from warnings up; our own Normal Events go out explicitly (kopf.event).
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo.kube = KubeClient.from_environment()
    memo.settings = OperatorSettings.from_env()
    # A model deleted while its readiness check runs waits for the check to end: look again
    # after one check's interval, not Kopf's default minute.
    settings.background.cancellation_polling = memo.settings.poll_seconds
    memo.knative = None  # discovered on first use
    port = os.environ.get("MOPAR_METRICS_PORT")
    if port:
        metrics.serve(int(port))
    # Registered here, not at import, so its interval is this run's setting; a handler of the
    # same id registered again (an operator restarted in this process) is not added twice.
    poll = memo.settings.poll_seconds
    kopf.timer(GROUP, VERSION, PLURAL, id="readiness", interval=poll, initial_delay=poll)(keep_ready)


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
    *, body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> str:
    started = time.perf_counter()
    ctx = _context(body, patch, name, namespace, uid, memo)
    try:
        message = await reconciling.reconcile(ctx)
    except (kopf.TemporaryError, kopf.PermanentError):
        raise  # waiting for the prepare Job is no failure; permanent ones are counted where raised
    except Exception:
        metrics.reconcile_error(ctx.owner, "error")
        raise
    metrics.reconciled(ctx.owner, time.perf_counter() - started)
    return message


async def keep_ready(
    *, body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Per-slice ready replicas, the endpoint and the Ready condition, and the model's Redis user
    still there (a timer, see `configure`)."""
    ctx = _context(body, patch, name, namespace, uid, memo)
    if ctx.current.get("phase") not in reconciling.DEPLOYED_PHASES:
        return
    try:
        spec = parse(body.get("spec"), name)
    except SpecError:
        return  # the reconcile reports it
    await readiness.check(ctx, spec)
    await reconciling.restore_credentials(ctx, spec)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(
    *, body: kopf.Body, patch: kopf.Patch, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Remove the model's tensors and its slice files (those no other model uses) from Redis."""
    await cleanup.clean_up(_context(body, patch, name, namespace, uid, memo))
