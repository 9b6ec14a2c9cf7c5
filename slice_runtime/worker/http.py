"""The worker's HTTP adapter: a small control API in front of `SliceWorker`.

    POST /run {"request_id": R}  ->  reads the slice's inputs of request R from the store,
                                     runs onnxruntime, writes its outputs under R, answers
                                     {"request_id", "outputs": {name: {raw_bytes, wire_bytes,
                                     codec}}, "timings_ms": {read, compute, write, total}}
    GET /health/live, /health/ready (model loaded and store reachable), /metrics, /stats

Control travels over HTTP, so Knative scales slices on request concurrency; tensors travel
through the store. Errors are `{"error": ...}` with the status `errors.http_status` gives.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from slice_runtime import probes
from slice_runtime.errors import InvalidInput, RuntimeFailure, http_status
from slice_runtime.store.keys import check_request_id
from slice_runtime.worker.core import SliceWorker
from slice_runtime.worker.parent import Supervisor

log = logging.getLogger("mopar.worker")


def build_app(worker: SliceWorker, supervisor: Supervisor | None = None) -> web.Application:
    supervisor = supervisor or Supervisor(None)
    routes = web.RouteTableDef()

    @routes.post("/run")
    async def run(request: web.Request) -> web.Response:
        request_id = None
        try:
            try:
                body = await request.json()
                request_id = check_request_id(body["request_id"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInput('expected {"request_id": ID}, ID 1-128 letters, digits, "-" or "_"') from None
            return web.json_response(await worker.run(request_id))
        except RuntimeFailure as error:
            # Inputs absent: the caller's ordering problem (409); store down: ours, retryable (503).
            return web.json_response({"error": str(error)}, status=http_status(error))
        except Exception as error:  # noqa: BLE001 - onnxruntime failures become a 500 with their message
            log.exception("slice %s failed on request %s", worker.entry.id, request_id)
            return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=500)

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(worker.stats())

    @routes.post("/stats/reset")
    async def reset_stats(request: web.Request) -> web.Response:
        worker.reset_stats()  # the benchmark measures after its warm-up
        return web.json_response(worker.stats())

    app = web.Application()
    app.add_routes(routes)
    app.add_routes(probes.routes("", worker.ready))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await worker.start()
        yield
        if supervisor.gone and worker.transport is not None:
            # The supervisor died (kill -9): nobody else clears what its requests left.
            cleared = await worker.transport.purge()
            log.warning("supervisor gone: cleared %d tensor(s) of model %s", cleared, worker.manifest.name)
        await worker.close()

    app.cleanup_ctx.append(lifecycle)
    return app
