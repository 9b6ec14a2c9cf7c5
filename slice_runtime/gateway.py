"""`mopar gateway`: the Open Inference Protocol (KServe V2) in front of a partitioned model.

`DataPlane.infer` is independent of HTTP: it checks the inputs against the model's
metadata, writes them to the store, runs every slice as soon as the slices it depends
on are done (sub-slices of one slice in parallel), deletes each tensor once its last
reader is done, reads and joins the outputs, and deletes whatever the request left,
failed or not. Slice calls are retried with backoff on connection failures and 5xx
answers, each bounded by a timeout, the whole request by another. The REST adapter
(`build_app`) maps the named errors to HTTP statuses in one place (`STATUS`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from . import codec, metrics, probes, v2
from . import manifest as manifests
from .config import env_str
from .errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    RuntimeFailure,
    SettingError,
    SliceFailed,
    TransportError,
)
from .transports import Transport, open_transport

log = logging.getLogger("mopar.gateway")
SERVER_NAME = "mopar"
SERVER_VERSION = "0.1.0"

# The one place errors become statuses: the caller's mistakes are 4xx, ours 5xx.
STATUS: dict[type[RuntimeFailure], int] = {
    InvalidInput: 400,
    ModelNotFound: 404,
    ModelNotReady: 503,
    TransportError: 503,
    SliceFailed: 503,
}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff between attempts of one slice call."""

    attempts: int = 5
    first_delay: float = 0.1
    factor: float = 3.0
    max_delay: float = 3.0

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * self.factor, self.max_delay)


class SliceCallError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class HttpSlices:
    """Reaches slice workers at their base URLs (one per slice id)."""

    def __init__(self, endpoints: Mapping[str, str], call_timeout: float = 30.0) -> None:
        self.endpoints = dict(endpoints)
        self.call_timeout = call_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def run(self, slice_id: str, request_id: str) -> dict[str, Any]:
        url = f"{self.endpoints[slice_id]}/run"
        timeout = aiohttp.ClientTimeout(total=self.call_timeout)
        try:
            async with self.session.post(url, json={"request_id": request_id}, timeout=timeout) as response:
                body = await response.json(content_type=None)
                if response.status == 200:
                    return body  # type: ignore[no-any-return]
                message = f"slice {slice_id} answered {response.status}: {body.get('error', body)}"
                raise SliceCallError(message, retryable=response.status >= 500)
        except (TimeoutError, aiohttp.ClientError, ValueError) as error:
            raise SliceCallError(f"slice {slice_id} at {url}: {type(error).__name__} {error}".strip(), True) from None

    async def ready(self, slice_id: str) -> bool:
        try:
            async with self.session.get(
                f"{self.endpoints[slice_id]}/health/ready", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class DataPlane:
    def __init__(
        self,
        manifest: manifests.Manifest,
        transport: Transport,
        slices: HttpSlices,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 60.0,
        ttl_seconds: float = 300.0,
        input_codec: str = "none",
    ) -> None:
        self.manifest = manifest
        self.name = name or manifest.name
        self.transport = transport
        self.slices = slices
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.ttl_seconds = ttl_seconds
        self.input_codec = codec.CodecSetting.parse(input_codec)
        # Readers of each tensor: the slices that take it, plus the gateway for the outputs.
        self.readers: dict[str, int] = {}
        for entry in manifest.slices:
            for spec in entry.inputs:
                self.readers[spec.name] = self.readers.get(spec.name, 0) + 1
        self.output_tensors = manifest.output_tensors()
        for tensor in self.output_tensors:
            self.readers[tensor] = self.readers.get(tensor, 0) + 1
        # Everything a request can leave in the store, deleted when it ends, failed or not.
        self.all_tensors = sorted(
            {*(s.name for s in manifest.inputs), *(o.name for e in manifest.slices for o in e.outputs)}
        )
        self.ready = probes.ThrottledCheck(self._check_ready)

    def metadata(self) -> dict[str, Any]:
        return v2.model_metadata(self.name, self.manifest.inputs, self.manifest.outputs)

    def check_model(self, name: str) -> None:
        if name != self.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {self.name!r}")

    async def _check_ready(self) -> bool:
        """The store answers and every slice is ready."""
        try:
            await self.transport.ping()
            ok = all(await asyncio.gather(*(self.slices.ready(e.id) for e in self.manifest.slices)))
            metrics.STORE_UP.labels(model=self.name).set(1)
        except TransportError:
            metrics.STORE_UP.labels(model=self.name).set(0)
            ok = False
        return ok

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        v2.check_inputs(inputs, self.manifest.inputs)
        request_id = uuid.uuid4().hex
        frames = {name: codec.encode(array, self.input_codec) for name, array in inputs.items()}
        await self.transport.put(request_id, frames, self.ttl_seconds)
        try:
            await asyncio.wait_for(self._run_slices(request_id), self.request_timeout)
            names = self.output_tensors
            arrays = [codec.decode(f) for f in await self.transport.get(request_id, names)]
            return self.manifest.join_outputs(dict(zip(names, arrays)))
        except TimeoutError:
            raise SliceFailed(f"request {request_id} timed out after {self.request_timeout:g} s") from None
        finally:
            try:
                await self.transport.delete(request_id, self.all_tensors)
            except TransportError as error:  # the TTL removes them later
                log.warning("could not delete the tensors of request %s: %s", request_id, error)

    async def _run_slices(self, request_id: str) -> None:
        remaining = dict(self.readers)
        tasks: dict[str, asyncio.Task[None]] = {}
        deletions: list[asyncio.Task[int]] = []

        async def run(entry: manifests.SliceEntry) -> None:
            if entry.depends_on:
                await asyncio.gather(*(tasks[d] for d in entry.depends_on))
            await self._call(entry.id, request_id)
            done_with = []
            for spec in entry.inputs:
                remaining[spec.name] -= 1
                if remaining[spec.name] == 0:
                    done_with.append(spec.name)
            if done_with:  # free the store as soon as a tensor's last reader is done, off the critical path
                deletions.append(asyncio.ensure_future(self.transport.delete(request_id, done_with)))

        for entry in self.manifest.slices:
            tasks[entry.id] = asyncio.ensure_future(run(entry))
        try:
            await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), *deletions, return_exceptions=True)

    async def _call(self, slice_id: str, request_id: str) -> dict[str, Any]:
        delays = self.retry.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.slices.run(slice_id, request_id)
            except SliceCallError as error:
                delay = next(delays, None) if error.retryable else None
                if delay is None:
                    raise SliceFailed(f"{error} (after {attempt} attempt{'s' if attempt > 1 else ''})") from None
                metrics.GATEWAY_RETRIES.labels(model=self.name, slice=slice_id).inc()
                log.warning("%s; retrying in %.2f s", error, delay)
                await asyncio.sleep(delay)


def _error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(plane: DataPlane, max_body_bytes: int = 64 * 2**20) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/v2")
    async def server_metadata(request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]})

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
        except (ModelNotReady, TransportError, SliceFailed):
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
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except RuntimeFailure as error:
            status = next((s for kind, s in STATUS.items() if isinstance(error, kind)), 500)
            return _error_response(status, str(error))
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


# -- command line (options: slice_runtime.options) ----------------------------------
def endpoints_from(args: argparse.Namespace) -> dict[str, str]:
    pairs = list(args.slice_url)
    if not pairs and env_str("MOPAR_SLICE_URLS"):
        pairs = str(env_str("MOPAR_SLICE_URLS")).split(",")
    endpoints = {}
    for pair in pairs:
        slice_id, sep, url = pair.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise SettingError(f"--slice-url wants ID=http://host:port, got {pair!r}")
        endpoints[slice_id] = url.rstrip("/")
    return endpoints


def make_plane(args: argparse.Namespace) -> DataPlane:
    if not args.manifest:
        raise SettingError("mopar gateway needs --manifest (or MOPAR_MANIFEST)")
    manifest = manifests.load(Path(args.manifest))
    endpoints = endpoints_from(args)
    missing = [e.id for e in manifest.slices if e.id not in endpoints]
    if missing:
        raise SettingError(f"no --slice-url for slice(s) {', '.join(missing)}")
    try:
        transport = open_transport(args.transport, args.namespace, manifest.name)
    except ValueError as error:
        raise SettingError(str(error)) from None
    return DataPlane(
        manifest,
        transport,
        HttpSlices(endpoints, args.call_timeout),
        name=args.name,
        retry=RetryPolicy(attempts=args.retries + 1),
        request_timeout=args.request_timeout,
        ttl_seconds=args.ttl,
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    plane = make_plane(args)
    app = build_app(plane, int(args.max_body_mb * 2**20))

    async def close(app: web.Application) -> None:
        await plane.slices.close()
        await plane.transport.close()

    app.on_cleanup.append(close)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        shutdown_timeout=60.0,
        print=lambda *_: log.info("serving %s on %s:%d", plane.name, args.host, args.port),
    )
    return 0
