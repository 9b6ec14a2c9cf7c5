"""`mopar calibrate`: measure the link model the planner prices cuts with.

Codec speeds come from encoding and decoding activation-like tensors (ReLU outputs:
half zeros, the rest positive floats) with every candidate setting; the store's round
trip from a tiny SET+GET and its throughput from SET+GET of growing payloads on a real
Redis (`round trip = 2 x hop + 2 x bytes / throughput`); the control call from timed HTTP posts to
an aiohttp server on loopback. Medians throughout.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import numpy as np

from slice_runtime import codec
from slice_runtime.linkmodel import CodecSpeed, LinkModel

from .errors import UsageError

PAYLOAD_SIZES = (16 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024)


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def measure_codecs(repeat: int = 7, seed: int = 0) -> dict[str, CodecSpeed]:
    rng = np.random.default_rng(seed)
    samples = [np.maximum(rng.standard_normal(n // 4, dtype=np.float32), 0) for n in (256 * 1024, 2 * 1024 * 1024)]
    speeds: dict[str, CodecSpeed] = {}
    for setting in codec.CANDIDATES:
        encode, decode = [], []
        for sample in samples:
            frame = codec.encode(sample, setting)
            encode.append(sample.nbytes / _median_ms(lambda s=sample, c=setting: codec.encode(s, c), repeat))
            decode.append(sample.nbytes / _median_ms(lambda f=frame: codec.decode(f), repeat))
        speeds[setting.name] = CodecSpeed(round(statistics.median(encode)), round(statistics.median(decode)))
    return speeds


def measure_store(url: str, repeat: int = 15) -> tuple[float, float]:
    """(hop_ms, bytes_per_ms) of the Redis at `url`, from pipelined SET+GET round trips."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        raise UsageError(f"cannot reach Redis at {url}: {error}") from None
    key = "mopar:calibrate:payload"

    def round_trip_ms(size: int) -> float:
        payload = bytes(size)

        def round_trip() -> None:
            client.set(key, payload)
            client.get(key)

        return _median_ms(round_trip, repeat)

    try:
        hop_ms = round_trip_ms(16) / 2
        # Each round trip moves the payload twice (SET, GET) and pays two hops.
        rates = [2 * size / max(round_trip_ms(size) - 2 * hop_ms, 1e-6) for size in PAYLOAD_SIZES]
    finally:
        client.delete(key)
        client.close()
    return hop_ms, statistics.median(rates)


async def _measure_invoke(repeat: int) -> float:
    from aiohttp import ClientSession, web

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"request_id": body["request_id"], "outputs": {"y": "key"}})

    app = web.Application()
    app.router.add_post("/run", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    times = []
    async with ClientSession() as session:
        for i in range(repeat + 5):
            start = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{port}/run", json={"request_id": str(i), "inputs": {}}) as r:
                await r.json()
            if i >= 5:  # the first calls open the connection
                times.append((time.perf_counter() - start) * 1000.0)
    await runner.cleanup()
    return statistics.median(times)


def calibrate(redis_url: str, repeat: int = 15) -> LinkModel:
    hop_ms, bytes_per_ms = measure_store(redis_url, repeat)
    invoke_ms = asyncio.run(_measure_invoke(repeat * 4))
    return LinkModel(
        hop_ms=round(hop_ms, 4),
        bytes_per_ms=round(bytes_per_ms),
        invoke_ms=round(invoke_ms, 4),
        codecs=measure_codecs(),
        source=f"mopar calibrate --redis {redis_url} on {time.strftime('%Y-%m-%d')}",
    )
