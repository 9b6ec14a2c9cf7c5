"""Health and metrics endpoints, the same on every data-plane server (worker and gateway)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

JSON_TYPE = "application/json"
# How long the gateway's readiness check waits for one slice's answer (it asks all at once).
SLICE_CHECK_SECONDS = 2.0


class ThrottledCheck:
    """An async yes/no check run at most once per `interval` seconds; in between, its last answer.

    Readiness probes come often, and each check reaches the store (and the gateway's, every slice).
    """

    def __init__(self, check: Callable[[], Awaitable[bool]], interval: float = 1.0) -> None:
        self._check = check
        self._interval = interval
        self._last = (-math.inf, False)

    async def __call__(self) -> bool:
        checked_at, ok = self._last
        if time.monotonic() - checked_at < self._interval:
            return ok
        ok = await self._check()
        self._last = (time.monotonic(), ok)
        return ok


def json_response(data: Any, status: int = 200) -> web.Response:
    """`data` as JSON with the content type exactly `application/json`: aiohttp's own adds
    `; charset=utf-8`, and KServe's client reads an error's text only for the exact type."""
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": JSON_TYPE})


# Where a server answers its health, the same on every data-plane server, gateway and worker,
# so that one probe (or load balancer check) fits all: the V2 protocol's paths, the same
# without the prefix (what pod probes and the gateway ask of a worker), and /healthz (live).
LIVE_PATHS = ("/v2/health/live", "/health/live", "/healthz")
READY_PATHS = ("/v2/health/ready", "/health/ready")


def routes(ready: Callable[[], Awaitable[bool]]) -> list[web.RouteDef]:
    """GET LIVE_PATHS, READY_PATHS (503 until `ready()`), and /metrics."""

    async def live(request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def readiness(request: web.Request) -> web.Response:
        ok = await ready()
        return json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [
        *(web.get(path, live) for path in LIVE_PATHS),
        *(web.get(path, readiness) for path in READY_PATHS),
        web.get("/metrics", metrics),
    ]
