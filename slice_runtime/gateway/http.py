"""The gateway's REST adapter: the Open Inference Protocol (KServe V2) over HTTP, in front of
`DataPlane`. Named errors become statuses in one place (`errors.http_status`)."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from slice_runtime import metrics, probes, v2
from slice_runtime.errors import InvalidInput, RuntimeFailure, SliceFailed, TransportError, http_status
from slice_runtime.gateway.core import DataPlane
from slice_runtime.version import version

log = logging.getLogger("mopar.gateway")
SERVER_NAME = "mopar"


def _error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(plane: DataPlane, max_body_bytes: int = 64 * 2**20) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/v2")
    async def server_metadata(request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": version(), "extensions": ["binary_tensor_data"]})

    @routes.get("/v2/models/{name}")
    async def model_metadata(request: web.Request) -> web.Response:
        plane.check_model(request.match_info["name"])
        return web.json_response(plane.metadata())

    @routes.get("/v2/models/{name}/ready")
    async def model_ready(request: web.Request) -> web.Response:
        plane.check_model(request.match_info["name"])
        ok = await plane.ready()
        return web.json_response({"name": plane.name, "ready": ok}, status=200 if ok else 503)

    @routes.post("/v2/models/{name}/infer")
    async def infer(request: web.Request) -> web.Response:
        plane.check_model(request.match_info["name"])
        started = time.perf_counter()
        metrics.GATEWAY_IN_FLIGHT.labels(model=plane.name).inc()
        outcome = "error"
        try:
            body = await request.read()
            parsed = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH))
            outputs = await plane.infer(parsed.inputs)
            payload, headers = v2.encode_response(plane.name, parsed, outputs, plane.manifest.outputs)
            outcome = "ok"
            return web.Response(body=payload, headers=headers)
        except InvalidInput:
            outcome = "client_error"
            raise
        except (TransportError, SliceFailed):
            outcome = "unavailable"
            raise
        except web.HTTPRequestEntityTooLarge:
            outcome = "client_error"
            raise
        finally:
            metrics.GATEWAY_IN_FLIGHT.labels(model=plane.name).dec()
            metrics.GATEWAY_REQUESTS.labels(model=plane.name, outcome=outcome).inc()
            if outcome == "ok":
                metrics.GATEWAY_LATENCY.labels(model=plane.name).observe(time.perf_counter() - started)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RuntimeFailure as error:
            return _error_response(http_status(error), str(error))
        except web.HTTPRequestEntityTooLarge as error:
            return _error_response(413, f"request body over the limit of {max_body_bytes} bytes ({error.text})")
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return _error_response(error.status, error.reason)
        except Exception as error:  # noqa: BLE001 - our bug: say so, keep serving
            log.exception("internal error")
            return _error_response(500, f"internal error: {type(error).__name__}: {error}")

    app = web.Application(middlewares=[errors], client_max_size=max_body_bytes)
    app.add_routes(routes)
    app.add_routes(probes.routes("/v2", plane.ready))
    return app
