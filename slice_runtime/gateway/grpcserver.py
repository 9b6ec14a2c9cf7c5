"""The gateway's gRPC adapter: `inference.GRPCInferenceService` (the Open Inference Protocol over
gRPC) in front of the same `DataPlane` as the REST adapter, on the same event loop.

Named errors become status codes in the one table (`errors.grpc_status`); a request during the
drain gets UNAVAILABLE, and the requests in flight count in the same `Drain` as REST's, so a
SIGTERM waits for both. Only the gateway imports this module (and grpc): a slice worker never
does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from slice_runtime import metrics
from slice_runtime.errors import InvalidInput, RuntimeFailure, SettingError, SliceFailed, TransportError, grpc_status
from slice_runtime.gateway import grpcbodies, messages
from slice_runtime.gateway.core import DataPlane
from slice_runtime.gateway.lifecycle import Drain
from slice_runtime.v2 import EXTENSIONS, check_outputs
from slice_runtime.version import version

log = logging.getLogger("mopar.gateway")
SERVER_NAME = "mopar"

Handler = Callable[[Any, Any], Awaitable[Any]]  # (request, grpc.aio.ServicerContext) -> response


class Failure(Exception):
    """A status to answer with (raised inside a handler, answered by `_guarded`)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _code(error: BaseException) -> grpc.StatusCode:
    return grpc.StatusCode[grpc_status(error)]


def handlers(plane: DataPlane, drain: Drain) -> grpc.GenericRpcHandler:
    """The service's methods over `plane`, counting requests in flight in `drain`."""

    async def ready() -> bool:
        return not drain.draining and await plane.ready()

    async def server_live(request: Any, context: Any) -> Any:
        return messages.ServerLiveResponse(live=True)

    async def server_ready(request: Any, context: Any) -> Any:
        return messages.ServerReadyResponse(ready=await ready())

    async def model_ready(request: Any, context: Any) -> Any:
        plane.check_model(request.name, request.version or None)
        return messages.ModelReadyResponse(ready=await ready())

    async def server_metadata(request: Any, context: Any) -> Any:
        return messages.ServerMetadataResponse(name=SERVER_NAME, version=version(), extensions=EXTENSIONS)

    async def model_metadata(request: Any, context: Any) -> Any:
        plane.check_model(request.name, request.version or None)
        return grpcbodies.metadata_response(plane.metadata())

    async def model_infer(request: Any, context: Any) -> Any:
        plane.check_model(request.model_name, request.model_version or None)
        if drain.draining:
            metrics.GATEWAY_REQUESTS.labels(model=plane.name, outcome="draining").inc()
            raise Failure(grpc.StatusCode.UNAVAILABLE, "this gateway is shutting down; retry on another")
        started = time.perf_counter()
        metrics.GATEWAY_IN_FLIGHT.labels(model=plane.name).inc()
        drain.enter()
        outcome = "error"
        try:
            parsed, raw = grpcbodies.parse_infer(request)
            check_outputs(parsed, plane.manifest.outputs)
            outputs = await plane.infer(parsed.inputs)
            response = grpcbodies.infer_response(plane.name, parsed, raw, outputs, plane.manifest.outputs)
            outcome = "ok"
            return response
        except InvalidInput:
            outcome = "client_error"
            raise
        except (TransportError, SliceFailed):
            outcome = "unavailable"
            raise
        except asyncio.CancelledError:
            # The client left, or the drain's grace ran out (grpc answers the client itself).
            outcome = "unavailable" if drain.expired else "cancelled"
            raise
        finally:
            drain.leave()
            metrics.gateway_request_done(plane.name, outcome, started)

    methods: dict[str, Handler] = {
        "ServerLive": server_live,
        "ServerReady": server_ready,
        "ModelReady": model_ready,
        "ServerMetadata": server_metadata,
        "ModelMetadata": model_metadata,
        "ModelInfer": model_infer,
    }
    return grpc.method_handlers_generic_handler(
        messages.SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(method),
                request_deserializer=messages.METHODS[name][0].FromString,
                response_serializer=messages.METHODS[name][1].SerializeToString,
            )
            for name, method in methods.items()
        },
    )


def _guarded(method: Handler) -> Handler:
    """`method`, with our errors answered as their status codes and our bugs as INTERNAL."""

    async def call(request: Any, context: Any) -> Any:
        try:
            return await method(request, context)
        except Failure as error:
            code, message = error.code, str(error)
        except RuntimeFailure as error:
            code, message = _code(error), str(error)
        except Exception as error:  # noqa: BLE001 - our bug: say so, keep serving
            log.exception("internal error")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
        await context.abort(code, message)

    return call


async def start(
    plane: DataPlane, drain: Drain, host: str, port: int, max_message_bytes: int, max_concurrent_calls: int
) -> grpc.aio.Server:
    """Serve the gRPC service at host:port; `stop(grace)` stops it (after the drain). A call
    beyond `max_concurrent_calls` in flight gets RESOURCE_EXHAUSTED at once, as a connection
    beyond the HTTP limit gets a 503: HTTP/2 carries many calls on one connection, so calls
    are what is counted here."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=max_concurrent_calls,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),  # outputs are as large as the model makes them
        ],
    )
    server.add_generic_rpc_handlers([handlers(plane, drain)])
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as error:  # grpc says only that it failed to bind
        raise SettingError(f"cannot listen for gRPC on {host}:{port} ({error})") from None
    await server.start()
    return server
