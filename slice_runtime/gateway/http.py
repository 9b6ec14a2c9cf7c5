"""The gateway's REST adapter: the Open Inference Protocol (KServe V2) over HTTP, in front of
`DataPlane`. Named errors become statuses in one place (`errors.http_status`).

Everything the caller can get wrong is checked before any slice runs: the body (read within
`Limits.body_timeout`, parsed on a thread when it is large so the event loop keeps answering
probes), its inputs and the outputs it asks for. A client that goes away before its answer
is counted as `outcome="cancelled"`, not as our error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.typedefs import Handler

from slice_runtime import metrics, probes, v2
from slice_runtime.errors import InvalidInput, RuntimeFailure, SliceFailed, TransportError, http_status
from slice_runtime.gateway.core import DataPlane
from slice_runtime.gateway.lifecycle import RETRY_AFTER_SECONDS, Drain, Limits
from slice_runtime.version import version

log = logging.getLogger("mopar.gateway")
SERVER_NAME = "mopar"
# Bodies from this size up are parsed on a thread: a thread hop costs tens of microseconds,
# parsing a megabyte of JSON milliseconds.
OFFLOAD_BYTES = 1 << 20

DRAIN = web.AppKey("drain", Drain)


def _error_response(status: int, message: str) -> web.Response:
    return probes.json_response({"error": message}, status=status)


def _unavailable(message: str) -> web.Response:
    response = _error_response(503, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.force_close()
    return response


def build_app(plane: DataPlane, max_body_bytes: int = 64 * 2**20, limits: Limits | None = None) -> web.Application:
    limits = limits or Limits()
    drain = Drain()
    parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parse")
    routes = web.RouteTableDef()

    async def ready() -> bool:
        return not drain.draining and await plane.ready()

    def check_model(request: web.Request) -> None:
        """The model (and version, on the `/versions/{version}` routes) the path names is ours."""
        plane.check_model(request.match_info["name"], request.match_info.get("version"))

    @routes.get("/v2")
    async def server_metadata(request: web.Request) -> web.Response:
        return probes.json_response({"name": SERVER_NAME, "version": version(), "extensions": v2.EXTENSIONS})

    @routes.get("/v2/models/{name}")
    @routes.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: web.Request) -> web.Response:
        check_model(request)
        return probes.json_response(plane.metadata())

    @routes.get("/v2/models/{name}/ready")
    @routes.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(request: web.Request) -> web.Response:
        check_model(request)
        ok = await ready()
        return probes.json_response({"name": plane.name, "ready": ok}, status=200 if ok else 503)

    async def read_body(request: web.Request) -> bytes:
        try:
            async with asyncio.timeout(limits.body_timeout):
                return await request.read()
        except TimeoutError:
            raise web.HTTPRequestTimeout(reason=f"request body not received within {limits.body_timeout:g} s") from None

    async def parse(body: bytes, header_length: str | None) -> v2.InferRequest:
        if len(body) < OFFLOAD_BYTES:
            return v2.parse_request(body, header_length)
        return await asyncio.get_running_loop().run_in_executor(parsers, v2.parse_request, body, header_length)

    async def refuse(request: web.Request) -> web.StreamResponse:
        """503 to a request that came while draining, once its body is read: a client still
        sending its body would see the connection close, not the answer."""
        drain.enter()
        try:
            await read_body(request)
        finally:
            drain.leave()
        metrics.GATEWAY_REQUESTS.labels(model=plane.name, outcome="draining").inc()
        return _unavailable("this gateway is shutting down; retry on another")

    @routes.post("/v2/models/{name}/infer")
    @routes.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: web.Request) -> web.StreamResponse:
        check_model(request)
        if drain.draining:
            return await refuse(request)
        started = time.perf_counter()
        metrics.GATEWAY_IN_FLIGHT.labels(model=plane.name).inc()
        drain.enter()
        outcome = "error"
        try:
            body = await read_body(request)
            parsed = await parse(body, request.headers.get(v2.HEADER_LENGTH))
            del body
            v2.check_outputs(parsed, plane.manifest.outputs)
            outputs = await plane.infer(parsed.inputs)
            payload, headers = v2.encode_response(plane.name, parsed, outputs, plane.manifest.outputs)
            outcome = "ok" if request.transport is not None and not request.transport.is_closing() else "cancelled"
            return web.Response(body=payload, headers=headers)
        except (InvalidInput, web.HTTPRequestEntityTooLarge, web.HTTPRequestTimeout):
            outcome = "client_error"
            raise
        except (TransportError, SliceFailed):
            outcome = "unavailable"
            raise
        except ConnectionError:  # the client went away mid-body
            outcome = "cancelled"
            raise
        except asyncio.CancelledError:
            if not drain.expired:
                outcome = "cancelled"
                raise
            # Cancelled by the drain once its grace period was over: say so to the client.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome = "unavailable"
            return _unavailable(f"this gateway shut down before the request finished (grace {limits.grace:g} s)")
        finally:
            drain.leave()
            metrics.gateway_request_done(plane.name, outcome, started)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RuntimeFailure as error:
            return _error_response(http_status(error), str(error))
        except web.HTTPRequestEntityTooLarge as error:
            return _error_response(413, f"request body over the limit of {max_body_bytes} bytes ({error.text})")
        except web.HTTPRequestTimeout as error:
            response = _error_response(408, error.reason)
            response.force_close()
            return response
        except web.HTTPException as error:
            if error.status < 400:
                raise
            response = _error_response(error.status, error.reason)
            # What the status needs said beside the body stays: a 405's Allow (RFC 9110 15.5.6).
            for name, value in error.headers.items():
                if name not in response.headers:
                    response.headers.add(name, value)
            return response
        except ConnectionError:
            raise  # nobody to answer; aiohttp closes the connection
        except Exception as error:  # noqa: BLE001 - our bug: say so, keep serving
            log.exception("internal error")
            return _error_response(500, f"internal error: {type(error).__name__}: {error}")

    async def close_parsers(app: web.Application) -> None:
        parsers.shutdown(wait=False)

    app = web.Application(middlewares=[errors], client_max_size=max_body_bytes)
    app[DRAIN] = drain
    app.add_routes(routes)
    app.add_routes(probes.routes(ready))
    app.on_cleanup.append(close_parsers)
    return app
