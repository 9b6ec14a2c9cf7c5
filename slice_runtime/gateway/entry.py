"""`mopar gateway`: settings from options and MOPAR_* variables (see `options`), then the
REST adapter (and with `--grpc-port` the gRPC one) in front of the data plane and its slice
workers. On SIGTERM it drains
(`lifecycle`): new requests get 503 with Retry-After, those in flight finish within the
grace period (MOPAR_GRACE_SECONDS, which the pod's terminationGracePeriodSeconds covers)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from slice_runtime import allocator
from slice_runtime import manifest as manifests
from slice_runtime.config import env_str
from slice_runtime.errors import SettingError
from slice_runtime.gateway import lifecycle
from slice_runtime.gateway.batching import policy_from
from slice_runtime.gateway.client import HttpSlices
from slice_runtime.gateway.core import DataPlane, RetryPolicy
from slice_runtime.gateway.http import DRAIN, build_app
from slice_runtime.store import open_transport

log = logging.getLogger("mopar.gateway")


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
        transport = open_transport(
            args.transport,
            args.namespace,
            manifest.name,
            op_timeout=args.store_timeout,
            max_connections=args.store_connections,
        )
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
        inline_limit=args.inline_kb * 1024,
        batching=policy_from(args),
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    allocator.keep_large_buffers()
    plane = make_plane(args)
    limits = lifecycle.limits_from(args)
    max_body_bytes = int(args.max_body_mb * 2**20)
    app = build_app(plane, max_body_bytes, limits)

    async def serve(stop: asyncio.Event) -> None:
        runner = await lifecycle.start(app, args.host, args.port, limits, args.access_log)
        log.info("serving %s on %s:%d", plane.name, args.host, args.port)
        rpc = None
        try:
            if args.grpc_port:
                from slice_runtime.gateway import grpcserver  # grpc is loaded only when asked for

                rpc = await grpcserver.start(
                    plane, app[DRAIN], args.host, args.grpc_port, max_body_bytes, limits.max_connections
                )
                log.info("serving %s over gRPC on %s:%d", plane.name, args.host, args.grpc_port)
            await stop.wait()
            log.info("draining: finishing the requests in flight (at most %g s)", limits.grace)
        finally:
            await lifecycle.stop(runner, app[DRAIN], limits.grace)
            if rpc is not None:
                await rpc.stop(1.0)
            await plane.slices.close()
            await plane.transport.close()

    lifecycle.until_signal(serve)
    return 0
