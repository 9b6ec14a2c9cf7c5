"""`mopar calibrate`: measure the link model the planner prices cuts with.

Codec speeds come from encoding and decoding activation-like tensors (ReLU outputs:
half zeros, the rest positive floats) with every candidate setting; the store's round
trip and throughput from put+get of a tiny and of growing payloads through the real
transport (`round trip = 2 x hop + 2 x bytes / throughput`); the per-slice overhead from a
chain of tiny slices served by real workers behind the real gateway (`measure_invoke`), and
the calls' throughput from HTTP posts to another process (`measure_calls`). Run on the
gateway's host with the store on its own and `host` naming a workers' host, every figure
is taken across the links between them, as a cluster's traffic crosses them. Medians
throughout.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile, load_model
from mopar.plan.linkmodel import CodecSpeed, LinkModel
from slice_runtime import codec
from slice_runtime.local import Host

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


def shown_url(url: str) -> str:
    """A store URL without its credentials (it ends up in link.json and every plan.json)."""
    parts = urlsplit(url)
    if not parts.scheme or (parts.username is None and parts.password is None and not parts.query):
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))  # the query may hold a password too


def measure_store(url: str, repeat: int = 15) -> tuple[float, float]:
    """(hop_ms, bytes_per_ms) of the store at `url` from here, through the transport the
    workers use (`slice_runtime.store`): a round trip (put + get) moves the payload twice and
    pays two hops. The hop is half a tiny round trip; the throughput is the slope of round
    trip against size over large payloads, which a rate limiter's burst allowance (a
    constant head start) does not bias."""
    return asyncio.run(_store_round_trips(url, repeat))


async def _store_round_trips(url: str, repeat: int) -> tuple[float, float]:
    import uuid

    from slice_runtime.store import open_transport

    try:
        store = open_transport(url, "calibrate", "link", op_timeout=60.0)
    except ValueError as error:
        raise UsageError(str(error)) from None
    request_id = uuid.uuid4().hex
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    try:

        async def round_trip_ms(size: int) -> float:
            frames, times = {"payload": bytes(size)}, []
            for _ in range(repeat + 1):  # the first warms the connection up
                started = time.perf_counter()
                await store.put(request_id, frames, 60.0)
                await store.get(request_id, ["payload"])
                times.append((time.perf_counter() - started) * 1000.0)
            return statistics.median(times[1:])

        hop_ms = await round_trip_ms(16) / 2
        sizes = PAYLOAD_SIZES[1:]
        times = [await round_trip_ms(size) for size in sizes]
    finally:
        try:
            await store.delete(request_id, ["payload"])
        finally:
            await store.close()
    return hop_ms, 2.0 / max(_slope(sizes, times), 1e-12)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def measure_invoke(
    transport: str, slices: int = 6, requests: int = 40, host: Host | None = None
) -> tuple[float, float]:
    """(invoke, request) milliseconds: what each extra slice adds to a request, all overheads
    in (the gateway's call, the worker's HTTP handling, its store round trips for a tiny
    tensor, its thread hop), and what a request of one slice costs beyond that slice's call
    (the client's round trip to the gateway, its parsing and answering).

    Measured the way it happens: a chain of `slices` tiny ReLUs served whole and served as
    `slices` slices by real workers (on `host`, across its link, when given) behind the real
    gateway here; the difference per extra slice, and what remains of the whole one.
    """
    with tempfile.TemporaryDirectory(prefix="mopar-calibrate-") as tmp:
        directory = Path(tmp)
        model = _relu_chain(directory / "chain.onnx", slices)
        for count in (1, slices):
            _slice_evenly(model, count, directory / f"chain-{count}")
        one, many = (
            asyncio.run(_median_request_ms(directory / f"chain-{count}", transport, requests, host))
            for count in (1, slices)
        )
    invoke = max((many - one) / (slices - 1), 0.0)
    return invoke, max(one - invoke, 0.0)


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
    coster = Coster(graph, memory, link, pricing.LAMBDA_FLAT, Constraints())
    n = len(graph)
    options = [coster.option(next(sweep(graph, i * n // count, [(i + 1) * n // count]))) for i in range(count)]
    plan = Plan(graph, Constraints(), pricing.LAMBDA_FLAT, link, memory, options, options[0], 0.0)  # type: ignore[arg-type]
    slice_model(model, planfile.to_json(plan, profile.model, profile.tensor_specs, {}), directory)


async def _median_request_ms(directory: Path, transport: str, requests: int, host: Host | None) -> float:
    from aiohttp import ClientSession

    from slice_runtime import manifest as manifests
    from slice_runtime import v2
    from slice_runtime.local import LocalServer, free_port
    from slice_runtime.tensors import random_inputs

    hosts = {entry.id: host for entry in manifests.load(directory).slices} if host else {}
    server = LocalServer(directory, transport=transport, port=free_port(), namespace="calibrate", hosts=hosts)
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
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), print=None, access_log=None)
"""


def measure_calls(repeat: int = 40, host: Host | None = None) -> float:
    """Bytes per ms a slice call's body moves at (an HTTP POST to another process, as the
    gateway calls a worker; on `host`, across its link, when given), from the time of a
    16 KiB and a 1 MiB body."""
    import subprocess
    import sys

    from slice_runtime.local import free_port

    host = host or Host()
    port = free_port()
    server = subprocess.Popen([*host.prefix, sys.executable, "-c", _CALL_SERVER, host.address, str(port)])
    try:
        url = f"http://{host.address}:{port}/run"
        small, large = asyncio.run(_post_times(url, (16 * 1024, 1 << 20), repeat))
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


def calibrate(transport: str, host: Host | None = None, repeat: int = 15, source: str = "") -> LinkModel:
    """The link model from here to the store at `transport` and, when `host` is given, to
    workers on that host: what moving a tensor and calling a slice cost across the network
    between them (the gateway's calls and the store's traffic cross the same links)."""
    from slice_runtime import calls, loops

    loops.install()  # measured on the loop the workers and the gateway run
    hop_ms, bytes_per_ms = measure_store(transport, repeat)
    # The chain's tiny tensors travel inside the calls: the difference per slice is the call itself.
    invoke_ms, request_ms = measure_invoke(transport, host=host)
    return LinkModel(
        hop_ms=round(hop_ms, 4),
        bytes_per_ms=round(bytes_per_ms),
        invoke_ms=round(invoke_ms, 4),
        request_ms=round(request_ms, 4),
        codecs=measure_codecs(),
        parallel_efficiency=measure_parallel_efficiency(),
        inline_bytes=calls.DEFAULT_INLINE_LIMIT,
        call_bytes_per_ms=round(measure_calls(host=host)),
        source=f"{source or 'mopar calibrate'} on {time.strftime('%Y-%m-%d')}",
    )
