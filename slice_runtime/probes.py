"""Health and metrics endpoints, the same on every data-plane server (worker and gateway)."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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


def routes(prefix: str, ready: Callable[[], Awaitable[bool]]) -> list[web.RouteDef]:
    """GET {prefix}/health/live, {prefix}/health/ready (503 until `ready()`), and /metrics."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def readiness(request: web.Request) -> web.Response:
        ok = await ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [
        web.get(f"{prefix}/health/live", live),
        web.get(f"{prefix}/health/ready", readiness),
        web.get("/metrics", metrics),
    ]
