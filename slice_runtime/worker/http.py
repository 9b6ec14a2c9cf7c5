"""The worker's HTTP adapter: a small control API in front of `SliceWorker`.

    POST /run (`calls`: request R, small tensors inline)  ->  takes the slice's inputs of
                R from the call or the store, runs onnxruntime, returns the outputs that fit
                inline and writes the rest to the store under R, with {"request_id",
                "outputs": {name: {raw_bytes, wire_bytes, codec, inline}}, "timings_ms":
                {read, compute, write, total}}
    GET /health/live, /health/ready (model loaded and store reachable), and the same under /v2
                and /healthz as the gateway (`probes`), /metrics, /stats

Control travels over HTTP, so Knative scales slices on request concurrency; tensors travel
through the store. Errors are `{"error": ...}` with the status `errors.http_status` gives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from slice_runtime import calls, probes
from slice_runtime.errors import RuntimeFailure, http_status
from slice_runtime.worker.core import SliceWorker
from slice_runtime.worker.parent import Supervisor

log = logging.getLogger("mopar.worker")
MAX_CALL_BYTES = 2**30
LATE_WRITES_SECONDS = 1.0


def build_app(worker: SliceWorker, supervisor: Supervisor | None = None) -> web.Application:
    supervisor = supervisor or Supervisor(None)
    routes = web.RouteTableDef()

    @routes.post("/run")
    async def run(request: web.Request) -> web.Response:
        request_id = "?"
        try:
            call = calls.decode_call(await request.read(), request.headers.get(calls.HEADER_LENGTH))
            request_id = call.request_id
            body, headers = calls.encode_reply(await worker.run(call))
            return web.Response(body=body, headers=headers)
        except RuntimeFailure as error:
            # Inputs absent: the caller's ordering problem (409); store down: ours, retryable (503).
            return probes.json_response({"error": str(error)}, status=http_status(error))
        except Exception as error:  # noqa: BLE001 - onnxruntime failures become a 500 with their message
            log.exception("slice %s failed on request %s", worker.entry.id, request_id)
            return probes.json_response({"error": f"{type(error).__name__}: {error}"}, status=500)

    @routes.get("/stats")
    async def stats(request: web.Request) -> web.Response:
        return probes.json_response(worker.stats())

    @routes.post("/stats/reset")
    async def reset_stats(request: web.Request) -> web.Response:
        worker.reset_stats()  # the benchmark measures after its warm-up
        return probes.json_response(worker.stats())

    # Only the gateway calls a worker, with every input of the slice that fits inline: up to
    # inputs x the inline limit, which the worker does not know; the gateway bounds requests.
    app = web.Application(client_max_size=MAX_CALL_BYTES)
    app.add_routes(routes)
    app.add_routes(probes.routes(worker.ready))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await worker.start()
        yield
        if supervisor.gone and worker.transport is not None:
            # The supervisor died (kill -9): nobody else clears what its requests left. Once
            # more a moment later: a store still executes what a dead client sent before it
            # died, so a tensor can land after the first purge.
            cleared = await worker.transport.purge()
            await asyncio.sleep(LATE_WRITES_SECONDS)
            cleared += await worker.transport.purge()
            log.warning("supervisor gone: cleared %d tensor(s) of model %s", cleared, worker.manifest.name)
        await worker.close()

    app.cleanup_ctx.append(lifecycle)
    return app
