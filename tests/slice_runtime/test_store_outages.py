"""`mopar serve` over its own real redis-server: a cold burst finds enough connections, a pool that
runs out says so (not "cannot reach Redis"), a Redis that is down or hangs fails each request
within the stated bound (`--store-timeout`), and a full Redis' error carries no tensor bytes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis

from mopar.model.modelfile import load_model
from slice_runtime import v2
from slice_runtime.errors import TransportError
from slice_runtime.store.redis import RedisTransport
from slice_runtime.tensors import random_inputs
from tests.support.redis_server import RedisServer
from tests.support.serving import ServeProcess
from tests.support.slicing import negate_twice, sliced

# An ImageNet-sized input (1x3x224x224 floats, 600 KB) through two cheap slices: a burst of 200
# moves 120 MB through Redis per hop, which is what ran the gateway's old pool dry.
MODEL = "negate"
WIDTH = 3 * 224 * 224
STORE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path_factory.mktemp("outage-redis"))
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture(scope="module")
def serve(tmp_path_factory, store):  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("outages")
    model = negate_twice(work / f"{MODEL}.onnx", WIDTH)
    directory = sliced(model, work / "slices", slices=2)
    # --inline-kb 0: every tensor through the store these tests take away
    server = ServeProcess(
        directory, "--transport", store.url, "--store-timeout", str(STORE_TIMEOUT), "--inline-kb", "0"
    )
    yield server, load_model(model)
    server.stop()


async def _burst(url: str, model, count: int) -> list[tuple[int, float, str]]:  # type: ignore[no-untyped-def]
    body, headers = v2.encode_request(random_inputs(model.inputs, seed=1), binary=True, binary_outputs=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one() -> tuple[int, float, str]:
            started = time.monotonic()
            async with session.post(f"{url}/v2/models/{MODEL}/infer", data=body, headers=headers) as response:
                payload = await response.read()
                error = "" if response.status == 200 else json.loads(payload)["error"]
                return response.status, time.monotonic() - started, error

        return await asyncio.gather(*(one() for _ in range(count)))


async def test_a_cold_burst_of_200_requests_all_succeed(serve) -> None:
    server, model = serve  # fresh: no request has been served, no pooled connection made
    results = await _burst(server.url, model, 200)
    assert [(status, error) for status, _, error in results if status != 200] == []


async def test_a_redis_that_is_down_or_hangs_fails_each_request_within_the_store_timeout(serve, store) -> None:
    server, model = serve
    assert {status for status, _, _ in await _burst(server.url, model, 4)} == {200}
    os.kill(store.process.pid, signal.SIGSTOP)  # hangs: connections open, nothing answers
    try:
        hung = await _burst(server.url, model, 50)
    finally:
        os.kill(store.process.pid, signal.SIGCONT)
    store.stop()  # down: connections refused
    try:
        down = await _burst(server.url, model, 50)
    finally:
        store.start()
    # The bound: --store-timeout for the gateway's first write, which fails; the margin is for
    # two shared cores (the old gateway took up to 22 s).
    for status, took, error in hung:
        assert status == 503 and took < STORE_TIMEOUT + 2.0, (status, took, error)
        assert f"did not answer within {STORE_TIMEOUT:g} s" in error
    for status, took, error in down:
        assert status == 503 and took < STORE_TIMEOUT + 2.0, (status, took, error)
        assert "cannot reach Redis" in error and "Connection refused" in error
    deadline = time.monotonic() + 15
    while {status for status, _, _ in await _burst(server.url, model, 2)} != {200}:
        assert time.monotonic() < deadline, "serving did not come back with Redis"
        await asyncio.sleep(0.3)


async def test_a_full_redis_is_named_without_tensor_bytes(serve, store) -> None:
    server, model = serve
    with redis.Redis.from_url(store.url) as client:
        client.config_set("maxmemory", "1")  # below what Redis already uses: every write is refused
        try:
            results = await _burst(server.url, model, 2)
        finally:
            client.config_set("maxmemory", "0")
    for status, _, error in results:
        assert status == 503 and "is full (maxmemory)" in error and "command not allowed" in error, error
        # redis-py quotes a failed pipeline command, value and all; none of it reaches the caller.
        assert "Command #" not in error and "\\x" not in error and "b'" not in error and len(error) < 300, error


async def test_an_exhausted_pool_is_told_apart_from_redis(store, tmp_path: Path) -> None:
    """One connection, held by a write that Redis has paused: the read behind it waits for the
    pool, not for Redis (which answers reads), and says so."""
    store.start()
    transport = RedisTransport(store.url, "default", "pool", op_timeout=0.5, max_connections=1)
    with redis.Redis.from_url(store.url) as client:
        client.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        try:
            write, read = await asyncio.gather(
                transport.put("r1", {"t": b"x" * 100}, 60), transport.get("r2", ["t"]), return_exceptions=True
            )
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
    await transport.close()
    assert isinstance(write, TransportError) and "did not answer within 0.5 s" in str(write)
    assert isinstance(read, TransportError)
    assert "no free connection" in str(read) and "all 1 connections of this process are busy" in str(read)
    assert "cannot reach" not in str(read)
