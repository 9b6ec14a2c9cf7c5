"""`mopar calibrate`: measure the link model the planner prices cuts with.

Codec speeds come from encoding and decoding activation-like tensors (ReLU outputs:
half zeros, the rest positive floats) with every candidate setting; the store's round
trip from a tiny SET+GET and its throughput from SET+GET of growing payloads on a real
Redis (`round trip = 2 x hop + 2 x bytes / throughput`); the per-slice overhead from a chain of
tiny slices served by real workers behind the real gateway (`measure_invoke`). Medians throughout.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile, load_model
from mopar.plan.linkmodel import CodecSpeed, LinkModel
from slice_runtime import codec

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
            encode.append(sample.nbytes / _median_ms(partial(codec.encode, sample, setting), repeat))
            decode.append(sample.nbytes / _median_ms(partial(codec.decode, frame), repeat))
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


def measure_invoke(transport: str, slices: int = 6, requests: int = 40) -> float:
    """Milliseconds each extra slice adds to a request, all overheads in: the gateway's call,
    the worker's HTTP handling, its store round trips for a tiny tensor, its thread hop.

    Measured the way it happens: a chain of `slices` tiny ReLUs served whole and served as
    `slices` slices by real workers behind the real gateway; the difference per extra slice.
    """
    with tempfile.TemporaryDirectory(prefix="mopar-calibrate-") as tmp:
        directory = Path(tmp)
        model = _relu_chain(directory / "chain.onnx", slices)
        for count in (1, slices):
            _slice_evenly(model, count, directory / f"chain-{count}")
        one, many = (
            asyncio.run(_median_request_ms(directory / f"chain-{count}", transport, requests)) for count in (1, slices)
        )
    return max((many - one) / (slices - 1), 0.0)


def _relu_chain(path: Path, length: int) -> ModelFile:
    import onnx
    from onnx import TensorProto, helper

    names = ["x", *(f"t{i}" for i in range(length))]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"relu{i}") for i in range(length)]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [1, 256])],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save_model(proto, str(path))
    return load_model(path)


def _slice_evenly(model: ModelFile, count: int, directory: Path) -> None:
    from mopar.plan import graph as graphs
    from mopar.plan import planfile, pricing
    from mopar.plan.memory import MB, MemoryModel
    from mopar.plan.planner import Constraints, Coster, Plan
    from mopar.plan.segments import sweep
    from mopar.profile.profiler import profile_model
    from mopar.slice.slicer import slice_model

    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    link, memory = LinkModel.load(), MemoryModel(MB)
    coster = Coster(graph, memory, link, pricing.LAMBDA, Constraints())
    n = len(graph)
    options = [coster.option(next(sweep(graph, i * n // count, [(i + 1) * n // count]))) for i in range(count)]
    plan = Plan(graph, Constraints(), pricing.LAMBDA, link, memory, options, options[0], 0.0)  # type: ignore[arg-type]
    slice_model(model, planfile.to_json(plan, profile.model, profile.tensor_specs, {}), directory)


async def _median_request_ms(directory: Path, transport: str, requests: int) -> float:
    from aiohttp import ClientSession

    from slice_runtime import v2
    from slice_runtime.local import LocalServer, free_port
    from slice_runtime.tensors import random_inputs

    server = LocalServer(directory, transport=transport, port=free_port(), namespace="calibrate")
    await server.start()
    try:
        body, headers = v2.encode_request(random_inputs(server.manifest.inputs), binary=True)
        times = []
        async with ClientSession() as session:
            for i in range(requests + 10):
                started = time.perf_counter()
                async with session.post(f"{server.url}/v2/models/chain/infer", data=body, headers=headers) as r:
                    await r.read()
                if i >= 10:  # the first requests warm up the connections and the workers
                    times.append((time.perf_counter() - started) * 1000.0)
        return statistics.median(times)
    finally:
        await server.stop()


def measure_parallel_efficiency(runs: int = 12) -> float:
    """Speed of two sessions running at once in two processes, relative to one alone
    (1.0: two idle cores; less where they share a core, caches or memory bandwidth)."""
    import os
    import subprocess
    import sys

    import onnx

    from mopar.model import zoo

    if (os.cpu_count() or 1) < 2:
        return 0.5
    with tempfile.TemporaryDirectory(prefix="mopar-calibrate-") as tmp:
        path = Path(tmp) / "convs.onnx"
        onnx.save_model(zoo.build("resnet50", scale=0.5, image=112), str(path))
        script = (
            "import sys, time, numpy as np; from slice_runtime.sessions import open_session; "
            "s = open_session(sys.argv[1]); x = {'input': np.zeros((1, 3, 112, 112), np.float32)}; "
            "[s.run(None, x) for _ in range(3)]; t = time.perf_counter(); "
            f"[s.run(None, x) for _ in range({runs})]; print((time.perf_counter() - t) / {runs})"
        )

        def timed(count: int) -> float:
            processes = [
                subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
                for _ in range(count)
            ]
            return statistics.mean(float(p.communicate()[0]) for p in processes)

        alone, together = timed(1), timed(2)
    return round(min(1.0, alone / together), 3)


_CALL_SERVER = """
import sys
from aiohttp import web
from slice_runtime import loops
async def run(request):
    await request.read()
    return web.Response(body=b"ok")
app = web.Application(client_max_size=1 << 30)
app.router.add_post("/run", run)
loops.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def measure_calls(repeat: int = 40) -> float:
    """Bytes per ms a slice call's body moves at (an HTTP POST to another process, as the
    gateway calls a worker), from the time of a 16 KiB and a 1 MiB body."""
    import subprocess
    import sys

    from slice_runtime.local import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _CALL_SERVER, str(port)])
    try:
        small, large = asyncio.run(_post_times(f"http://127.0.0.1:{port}/run", (16 * 1024, 1 << 20), repeat))
    finally:
        server.terminate()
        server.wait(10)
    return ((1 << 20) - 16 * 1024) / max(large - small, 1e-6)


async def _post_times(url: str, sizes: tuple[int, ...], repeat: int) -> list[float]:
    from aiohttp import ClientError, ClientSession

    async with ClientSession() as session:
        for _ in range(100):  # until the server listens
            try:
                async with session.post(url, data=b"") as response:
                    await response.read()
                break
            except ClientError:
                await asyncio.sleep(0.05)
        medians = []
        for size in sizes:
            body, times = b"x" * size, []
            for i in range(repeat + 5):
                started = time.perf_counter()
                async with session.post(url, data=body) as response:
                    await response.read()
                if i >= 5:
                    times.append((time.perf_counter() - started) * 1000.0)
            medians.append(statistics.median(times))
    return medians


def calibrate(redis_url: str, repeat: int = 15) -> LinkModel:
    from slice_runtime import calls, loops

    loops.install()  # measured on the loop the workers and the gateway run
    hop_ms, bytes_per_ms = measure_store(redis_url, repeat)
    # The chain's tiny tensors travel inside the calls: the difference per slice is the call itself.
    invoke_ms = measure_invoke(redis_url)
    return LinkModel(
        hop_ms=round(hop_ms, 4),
        bytes_per_ms=round(bytes_per_ms),
        invoke_ms=round(invoke_ms, 4),
        codecs=measure_codecs(),
        parallel_efficiency=measure_parallel_efficiency(),
        inline_bytes=calls.DEFAULT_INLINE_LIMIT,
        call_bytes_per_ms=round(measure_calls()),
        source=f"mopar calibrate --redis {redis_url} on {time.strftime('%Y-%m-%d')}",
    )
