"""`mopar serve` going away, as a real process: SIGTERM drains (nothing in flight dropped, exit
within grace + 2 s, nothing left in the store), `kill -9` leaves no worker and no tensor behind,
and the store's password is on no command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import onnx
import pytest
import redis

from mopar.model import zoo
from mopar.model.modelfile import load_model
from slice_runtime import v2
from slice_runtime.sessions import open_session
from slice_runtime.store import open_transport
from slice_runtime.tensors import random_inputs
from tests.support.redis_server import RedisServer
from tests.support.serving import ServeProcess, gateway_in_flight, stopped, wait_until_ready, workers_of
from tests.support.slicing import sliced

MODEL = "mobilenetv2"
PASSWORD = "s3cret-pass-word"


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> tuple[Path, object]:
    # The published MobileNetV2 (5 ms a request): 200 requests stay in flight long enough to
    # be signalled mid-way and to outlast a short grace period, however fast the hops are.
    work = tmp_path_factory.mktemp("shutdown")
    onnx.save_model(zoo.build(MODEL), str(work / f"{MODEL}.onnx"))
    model = load_model(work / f"{MODEL}.onnx")
    return sliced(model.path, work / "slices", slices=2), model


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):  # type: ignore[no-untyped-def]
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), "--requirepass", PASSWORD)
    server.start()
    yield server
    server.stop()


def _expected(model, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:  # type: ignore[no-untyped-def]
    feeds = random_inputs(model.inputs, seed=seed)
    return feeds, open_session(model.serialized()).run(None, feeds)[0]


async def _burst(base: str, model, count: int):  # type: ignore[no-untyped-def]
    """`count` concurrent requests; each result (status, Retry-After, correct) or the exception."""
    cases = [_expected(model, seed) for seed in range(4)]
    bodies = [v2.encode_request(feeds, binary=True, binary_outputs=True) for feeds, _ in cases]
    url = f"{base}/v2/models/{MODEL}/infer"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one(i: int) -> object:
            body, headers = bodies[i % 4]
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        return response.status, response.headers.get("Retry-After"), json.loads(payload)["error"]
                    outputs = v2.decode_response(payload, response.headers.get(v2.HEADER_LENGTH))
                    return 200, None, bool(np.allclose(outputs["logits"], cases[i % 4][1], rtol=1e-4, atol=1e-5))
            except aiohttp.ClientError as error:
                return error

        return await asyncio.gather(*(one(i) for i in range(count)))


async def _burst_json(base: str, model, count: int):  # type: ignore[no-untyped-def]
    """`count` concurrent JSON requests, one connection each; each result (status, Retry-After,
    correct) or the exception."""
    cases = [_expected(model, seed) for seed in range(2)]
    bodies = [v2.encode_request(feeds) for feeds, _ in cases]
    url = f"{base}/v2/models/{MODEL}/infer"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one(i: int) -> object:
            body, headers = bodies[i % 2]
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        return response.status, response.headers.get("Retry-After"), json.loads(payload)["error"]
                    outputs = v2.decode_response(payload, None)
                    return 200, None, bool(np.allclose(outputs["logits"], cases[i % 2][1], rtol=1e-4, atol=1e-5))
            except aiohttp.ClientError as error:
                return error

        return await asyncio.gather(*(one(i) for i in range(count)))


def _connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:`port` on this machine, counted at the clients' end."""
    found = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if fields[2] == f"0100007F:{port:04X}" and fields[3] == "01":
                found += 1
    return found


async def _left_in_store(transport: str, namespace: str = "local") -> int:
    store = open_transport(transport, namespace, MODEL)
    try:
        return await store.count()
    finally:
        await store.close()


async def _terminate_under_load(serve: ServeProcess, model, count: int) -> tuple[list[object], float, float]:  # type: ignore[no-untyped-def]
    """Start `count` requests and, once all are in flight, SIGTERM serve and its workers at once (as
    systemd stops a service's cgroup, or a terminal's Ctrl-C its process group); (results, in
    flight then, seconds to exit). The workers are stopped (SIGSTOP) while the requests arrive, so
    they pile up at the gateway however fast a hop is and however slowly this client sends; they
    go on (SIGCONT) with SIGTERM pending, as if signalled mid-run."""
    workers = workers_of(serve.directory)
    with stopped(workers):
        burst = asyncio.ensure_future(_burst(serve.url, model, count))
        deadline = time.monotonic() + 20
        in_flight = 0.0
        while time.monotonic() < deadline and not burst.done():
            in_flight = await asyncio.to_thread(gateway_in_flight, serve.url, MODEL)
            if in_flight >= count:  # one arriving after SIGTERM is refused, rightly
                break
            await asyncio.sleep(0.05)
        signalled = time.monotonic()
        for pid in [serve.process.pid, *workers]:
            os.kill(pid, signal.SIGTERM)
    results = await burst
    code = await asyncio.to_thread(serve.wait, 60)
    assert code == 0, serve.log()[-2000:]
    return results, in_flight, time.monotonic() - signalled


@pytest.mark.parametrize("transport", ["shm", "redis"])
async def test_sigterm_with_200_in_flight_drops_none(slices, transport, redis_url) -> None:
    directory, model = slices
    url = "shm" if transport == "shm" else redis_url
    serve = ServeProcess(directory, "--transport", url)
    try:
        results, in_flight, took = await _terminate_under_load(serve, model, 200)
        assert in_flight == 200, f"only {in_flight} requests were in flight at SIGTERM"
        assert [r for r in results if r != (200, None, True)] == []  # every one answered, and right
        assert took < 30 + 2  # the default grace, plus two seconds
        assert workers_of(directory) == []
        assert await _left_in_store(url) == 0
        assert "finishing the requests in flight" in serve.log()
    finally:
        serve.kill()


async def test_past_the_grace_period_requests_are_answered_503_and_serve_exits(slices) -> None:
    directory, model = slices
    serve = ServeProcess(directory, "--grace", "0.2")
    try:
        results, _, took = await _terminate_under_load(serve, model, 200)
        assert took < 0.2 + 2
        refused = [r for r in results if r != (200, None, True)]
        assert refused, "every request finished within the grace period: it was not exercised"
        for result in refused:  # answered, not dropped: a 503 saying why, with Retry-After
            assert isinstance(result, tuple) and result[:2] == (503, "1"), result
            assert "shut" in result[2]
        assert workers_of(directory) == []
        assert await _left_in_store("shm") == 0
    finally:
        serve.kill()


@pytest.mark.parametrize("transport", ["shm", "redis"])
async def test_kill_9_of_serve_leaves_no_worker_and_no_tensor(slices, transport, private_redis) -> None:
    directory, model = slices
    url = "shm" if transport == "shm" else f"redis://:{PASSWORD}@127.0.0.1:{private_redis.port}/0"
    # The password travels in the environment; every tensor through the store, to see it cleared.
    serve = ServeProcess(directory, "--inline-kb", "0", env={"MOPAR_TRANSPORT": url})
    try:
        for pid in [serve.process.pid, *(pid for _, pid in serve.workers.values())]:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                assert PASSWORD.encode() not in cmdline.read()  # `ps` shows command lines to every user
        load = asyncio.ensure_future(_burst(serve.url, model, 100))
        deadline = time.monotonic() + 20
        while await _left_in_store(url) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # tensors of requests in flight are in the store
        assert await _left_in_store(url) > 0
        serve.signal(signal.SIGKILL)
        killed = time.monotonic()
        await load  # the requests in flight fail (their gateway is gone): nothing to check there
        while time.monotonic() < killed + 5 and (workers_of(directory) or await _left_in_store(url)):
            await asyncio.sleep(0.1)
        assert workers_of(directory) == []
        assert await _left_in_store(url) == 0
    finally:
        serve.kill()
    if transport == "redis":
        assert redis.Redis.from_url(url).keys("mopar:*") == []


async def test_mopar_gateway_drains_on_sigterm_as_in_a_pod(slices) -> None:
    """The Kubernetes entry point, in front of a local serve's workers, configured as the pod
    is (gRPC by MOPAR_GRPC_PORT): the kubelet's SIGTERM reaches the gateway alone, which
    finishes what it has."""
    import os
    import subprocess
    import sys

    import tritonclient.grpc as triton_grpc

    from tests.support import ROOT, free_port

    directory, model = slices
    workers = ServeProcess(directory)
    port, grpc_port = free_port(), free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-m", "mopar", "gateway", "--manifest", str(directory), "--transport", "shm",
         "--namespace", "local", "--host", "127.0.0.1", "--port", str(port),
         *(f"--slice-url={sid}={url}" for sid, (url, _) in workers.workers.items())],
        cwd=ROOT, stderr=subprocess.PIPE, env={**os.environ, "MOPAR_GRPC_PORT": str(grpc_port)},
    )  # fmt: skip
    try:
        front = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until_ready, front, gateway, 30, "mopar gateway")
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_server_ready() and client.is_model_ready(model.name)
        burst = asyncio.ensure_future(_burst(front, model, 100))
        while not burst.done() and await asyncio.to_thread(gateway_in_flight, front, MODEL) < 90:
            await asyncio.sleep(0.05)
        gateway.send_signal(signal.SIGTERM)
        results = await burst
        assert [r for r in results if r != (200, None, True)] == []
        assert await asyncio.to_thread(gateway.wait, 32) == 0
    finally:
        if gateway.poll() is None:
            gateway.kill()
        workers.stop()


async def test_sigterm_with_both_cores_busy_answers_every_request_whose_headers_arrived(slices) -> None:
    """Both cores busy, JSON bodies: the gateway's loop lags behind its sockets, so at SIGTERM
    requests have arrived that no handler has seen yet. Serve is held stopped while they connect
    and send, and signalled then (the signal and the requests wait for it together); each gets
    an answer, 200 or 503 with Retry-After, none a connection error."""
    directory, model = slices
    count = 64  # under the listener's backlog of 100: every connection is accepted by the kernel
    serve = ServeProcess(directory)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        with stopped([serve.process.pid]):
            burst = asyncio.ensure_future(_burst_json(serve.url, model, count))
            deadline = time.monotonic() + 60
            while _connections_to(serve.port) < count and time.monotonic() < deadline and not burst.done():
                await asyncio.sleep(0.05)
            assert _connections_to(serve.port) == count
            await asyncio.sleep(0.5)  # the clients write their headers and what the buffers hold
            serve.signal(signal.SIGTERM)
        results = await burst
        assert await asyncio.to_thread(serve.wait, 60) == 0, serve.log()[-2000:]
        unanswered = [r for r in results if not isinstance(r, tuple) or r[:2] not in {(200, None), (503, "1")}]
        assert unanswered == []
        assert [r for r in results if r[0] == 200 and r[2] is not True] == []  # type: ignore[index]
        assert workers_of(directory) == []
    finally:
        for process in busy:
            process.kill()
            process.wait()
        serve.kill()
