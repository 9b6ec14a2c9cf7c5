"""Local serving end to end: a real gateway and real worker processes over a real Redis and
shared memory; V2 clients' JSON and binary requests; reliability when things break."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import onnx
import pytest
import redis

from mopar.model import zoo
from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan
from mopar.profile.profiler import profile_model
from mopar.slice.slicer import slice_model
from slice_runtime import calls, v2
from slice_runtime.gateway.core import RetryPolicy
from slice_runtime.local import LocalServer, free_port
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs
from tests.support import ServerThread

NAME = "resnet"


@pytest.fixture(scope="module")
def sliced(tmp_path_factory) -> tuple[Path, object]:
    """A small ResNet cut into several slices, one of them split into sub-slices."""
    directory = tmp_path_factory.mktemp("served")
    onnx.save_model(zoo.build_small("resnet50"), str(directory / f"{NAME}.onnx"))
    model = load_model(directory / f"{NAME}.onnx")
    profile = profile_model(model, runs=2, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    free = pricing.Pricing(name="free-invocations", request_usd=0.0, gb_second_usd=1e-5, memory_min_mb=1)
    link = LinkModel(hop_ms=0.0, bytes_per_ms=1e9, invoke_ms=0.0)
    result = plan(
        graph,
        MemoryModel(1 * MB),
        link,
        free,
        Constraints(objective="latency", max_slices=4, max_split=2, dominance=0.0),
    )
    assert len(result.slices) >= 3 and any(o.parts > 1 for o in result.slices)
    slice_model(model, planfile.to_json(result, profile.model, profile.tensor_specs, {}), directory / "slices")
    return directory / "slices", model


def reference(model, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:  # type: ignore[no-untyped-def]
    feeds = random_inputs(model.inputs, seed=seed)
    return feeds, open_session(model.serialized()).run(None, feeds)[0]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module", params=["shm", "redis", "redis-store"])
def served(request, sliced, redis_server):  # type: ignore[no-untyped-def]
    """Tensors inside the slice calls (shm, redis), or every one through Redis (redis-store)."""
    directory, model = sliced
    transport = "shm" if request.param == "shm" else redis_server.url
    thread = ServerThread(
        LocalServer(
            directory,
            transport=transport,
            port=free_port(),
            name=NAME,
            max_body_bytes=2 * 2**20,
            retry=RetryPolicy(attempts=6),
            inline_limit=0 if request.param == "redis-store" else calls.DEFAULT_INLINE_LIMIT,
        )
    )
    yield thread, model, request.param
    thread.stop()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_inference_matches_the_whole_model(served, binary: bool) -> None:
    thread, model, _ = served
    url = f"{thread.server.url}/v2/models/{NAME}/infer"
    for seed in (1, 2):
        feeds, expected = reference(model, seed)
        body, headers = v2.encode_request(feeds, binary=binary, binary_outputs=binary, request_id=f"req-{seed}")
        status, response_headers, payload = post(url, body, headers)
        assert status == 200, payload
        header_length = {k.lower(): v for k, v in response_headers.items()}.get(v2.HEADER_LENGTH.lower())
        outputs = v2.decode_response(payload, header_length)
        np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
        assert json.loads(payload[: int(header_length or len(payload))])["id"] == f"req-{seed}"


def test_small_tensors_travel_inside_the_calls_and_never_touch_the_store(served, redis_server) -> None:
    thread, model, kind = served
    if kind == "shm":
        return  # shared memory counts no commands; the Redis cases show it
    client = redis.Redis.from_url(redis_server.url)
    before = client.info("commandstats")
    feeds, expected = reference(model, 5)
    body, headers = v2.encode_request(feeds, binary=True, binary_outputs=True)
    status, response_headers, payload = post(f"{thread.server.url}/v2/models/{NAME}/infer", body, headers)
    assert status == 200
    after = client.info("commandstats")
    writes = sum(after.get(c, {}).get("calls", 0) - before.get(c, {}).get("calls", 0) for c in ("cmdstat_set",))
    if kind == "redis":
        assert writes == 0  # every activation of this model fits inside a call
    else:
        assert writes > 0
    assert client.keys(f"mopar:local:{NAME}:*") == []


def test_v2_metadata_and_health(served) -> None:
    thread, model, _ = served
    base = thread.server.url
    assert get(f"{base}/v2")[1]["extensions"] == ["binary_tensor_data"]  # type: ignore[index]
    assert get(f"{base}/v2/health/live") == (200, {"live": True})
    assert get(f"{base}/v2/health/ready") == (200, {"ready": True})
    assert get(f"{base}/v2/models/{NAME}/ready") == (200, {"name": NAME, "ready": True})
    status, metadata = get(f"{base}/v2/models/{NAME}")
    assert status == 200
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64]}]  # type: ignore[index]
    assert metadata["outputs"][0]["name"] == "logits"  # type: ignore[index]


def test_caller_mistakes_are_4xx_naming_the_problem(served) -> None:
    thread, model, _ = served
    base = thread.server.url
    feeds, _ = reference(model, 1)
    body, headers = v2.encode_request(feeds)
    cases = [
        (f"{base}/v2/models/nosuch/infer", body, headers, 404, "'nosuch' is not served"),
        (
            f"{base}/v2/models/{NAME}/infer",
            *v2.encode_request({"input": feeds["input"][:, :2]}),
            400,
            "shape 1x2x64x64",
        ),
        (
            f"{base}/v2/models/{NAME}/infer",
            *v2.encode_request({"input": feeds["input"].astype(np.float64)}),
            400,
            "dtype float64",
        ),
        (f"{base}/v2/models/{NAME}/infer", *v2.encode_request({"image": feeds["input"]}), 400, "unknown input 'image'"),
        (f"{base}/v2/models/{NAME}/infer", b"{oops", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (f"{base}/v2/models/{NAME}/infer", b"0" * (3 * 2**20), {"Content-Type": "application/json"}, 413, "limit"),
    ]
    for url, data, request_headers, status, message in cases:
        got, _, payload = post(url, data, request_headers)
        assert got == status, (message, payload[:200])
        assert message in json.loads(payload)["error"]
    assert get(f"{base}/v2/models/nosuch")[0] == 404


def test_metrics_are_exported(served) -> None:
    thread, _, _ = served
    with urllib.request.urlopen(f"{thread.server.url}/metrics") as response:
        text = response.read().decode()
    assert 'mopar_gateway_requests_total{model="resnet",outcome="ok"}' in text
    worker = next(iter(thread.server.workers.values()))
    with urllib.request.urlopen(f"{worker.url}/metrics") as response:
        text = response.read().decode()
    assert "mopar_slice_inference_seconds_bucket" in text and "mopar_slice_activation_bytes_total" in text


async def _many(url: str, model, count: int, concurrency: int) -> list[tuple[int, float, bool]]:  # type: ignore[no-untyped-def]
    cases = [reference(model, seed) for seed in range(4)]
    bodies = [v2.encode_request(feeds, binary=True, binary_outputs=True) for feeds, _ in cases]
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> tuple[int, float, bool]:
            body, headers = bodies[i % 4]
            async with slots:
                started = time.monotonic()
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    elapsed = time.monotonic() - started
                    if response.status != 200:
                        assert "error" in json.loads(payload)
                        return response.status, elapsed, False
                    outputs = v2.decode_response(payload, response.headers.get(v2.HEADER_LENGTH))
                    return 200, elapsed, bool(np.allclose(outputs["logits"], cases[i % 4][1], rtol=1e-4, atol=1e-5))

        return await asyncio.gather(*(one(i) for i in range(count)))


async def test_200_concurrent_requests_all_correct(served) -> None:
    thread, model, transport = served
    results = await _many(f"{thread.server.url}/v2/models/{NAME}/infer", model, 200, 200)
    assert [status for status, _, _ in results] == [200] * 200
    assert all(correct for _, _, correct in results)
    assert thread.call(thread.server.plane.transport.count()) == 0  # nothing left in the store


@pytest.fixture
def redis_served(sliced, redis_server, redis_url):  # type: ignore[no-untyped-def]
    directory, model = sliced  # (redis_url: the server is up and its database empty)
    thread = ServerThread(
        LocalServer(
            directory,
            transport=redis_server.url,
            port=free_port(),
            name=NAME,
            request_timeout=20.0,
            retry=RetryPolicy(attempts=6),
            inline_limit=0,  # every tensor through Redis, which these tests take away
        )
    )
    yield thread, model, redis_server
    thread.stop()


async def test_a_worker_killed_mid_load_is_restarted_and_no_request_hangs_or_leaks(redis_served) -> None:
    thread, model, redis_server = redis_served
    server = thread.server
    victim = server.workers[sorted(server.workers)[len(server.workers) // 2]]
    url = f"{server.url}/v2/models/{NAME}/infer"

    async def kill_soon() -> None:
        await asyncio.sleep(0.3)
        os.kill(victim.process.pid, signal.SIGKILL)

    retried_before = _retries()
    results, _ = await asyncio.gather(_many(url, model, 150, 8), kill_soon())
    assert victim.restarts == 1
    assert _retries() > retried_before  # the kill did land mid-load: calls failed and were retried
    for status, elapsed, correct in results:
        assert status in (200, 503)  # retried on the restarted worker, or a clear 503
        assert elapsed < 20.0 + 2.0  # none hangs past the request timeout
        assert correct or status == 503
    assert sum(status == 200 for status, _, _ in results) >= 140
    assert (await _many(url, model, 4, 4))[0][0] == 200  # serving again
    keys = redis.Redis.from_url(redis_server.url).keys("mopar:*")
    assert keys == [], keys[:5]  # no tensor of any request left behind


def test_stop_after_a_worker_exited_on_its_own_finishes_cleanly(redis_served) -> None:
    """A signal to the process group (Ctrl-C, systemd) can end a worker before serve writes it the
    stop word: the pipe is broken then, and stopping goes on."""
    thread, _, _ = redis_served
    server = thread.server
    victim = server.workers[sorted(server.workers)[0]]

    async def exit_then_stop() -> None:
        victim.process.kill()
        victim.process.wait()  # blocking: the supervisor gets no turn to restart it
        await server.stop()

    thread.call(exit_then_stop())
    assert victim.restarts == 0
    assert all(worker.process.poll() is not None for worker in server.workers.values())


def _retries() -> float:
    from prometheus_client import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "mopar_gateway_slice_retries"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def test_redis_unreachable_fails_fast_then_recovers(redis_served) -> None:
    thread, model, redis_server = redis_served
    base = thread.server.url
    feeds, expected = reference(model, 3)
    body, headers = v2.encode_request(feeds, binary=True)
    assert post(f"{base}/v2/models/{NAME}/infer", body, headers)[0] == 200
    redis_server.stop()
    try:
        started = time.monotonic()
        status, _, payload = post(f"{base}/v2/models/{NAME}/infer", body, headers)
        assert status == 503 and "Redis" in json.loads(payload)["error"]
        assert time.monotonic() - started < 5.0
        time.sleep(1.1)  # readiness is cached for a second
        assert get(f"{base}/v2/health/ready") == (503, {"ready": False})
    finally:
        redis_server.start()
    deadline = time.monotonic() + 15
    while get(f"{base}/v2/health/ready")[0] != 200:
        assert time.monotonic() < deadline, "readiness did not come back"
        time.sleep(0.2)
    status, response_headers, payload = post(f"{base}/v2/models/{NAME}/infer", body, headers)
    assert status == 200
    outputs = v2.decode_response(
        payload, {k.lower(): v for k, v in response_headers.items()}.get("inference-header-content-length")
    )
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
