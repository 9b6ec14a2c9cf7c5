"""Health and metrics endpoints, the same on every data-plane server (worker and gateway)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


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
