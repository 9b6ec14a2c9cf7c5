"""A slice worker as a real process: graceful shutdown, slice files from the artifact store."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan
from mopar.profile.profiler import profile_model
from mopar.slice.slicer import slice_model
from slice_runtime import codec
from slice_runtime.local import free_port
from slice_runtime.store import open_transport
from slice_runtime.store.artifacts import ArtifactStore
from tests.support.serving import ServeProcess
from tests.support.slicing import negate_twice, sliced


def _slow_model(path: Path) -> Path:
    """Ten 512x2048 @ 2048x2048 MatMuls (about 0.1 s each on one thread): a run long enough to
    send SIGTERM into the middle of."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((2048, 2048), np.float32) * 0.02, "w")
    nodes, previous = [], "x"
    for i in range(10):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{i}"], name=f"matmul{i}"))
        previous = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 2048])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [512, 2048])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def one_slice(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("worker")
    model = load_model(_slow_model(directory / "slow.onnx"))
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    result = plan(graph, MemoryModel(90 * MB), LinkModel.load(), pricing.LAMBDA, Constraints(max_slices=1))
    slice_model(model, planfile.to_json(result, profile.model, profile.tensor_specs, {}), directory / "slices")
    return directory / "slices"


def _start_worker(manifest: Path, transport: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "slice_runtime.worker", "--manifest", str(manifest), "--slice", "s0",
         "--transport", transport, "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process, url
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("worker did not become ready")


async def _store_input(redis_url: str, request_id: str) -> None:
    store = open_transport(redis_url, "default", "slow")
    x = np.random.default_rng(1).standard_normal((512, 2048)).astype(np.float32)
    await store.put(request_id, {"x": codec.encode(x)}, 60)
    await store.close()


def test_sigterm_finishes_the_run_in_flight(one_slice, redis_url) -> None:
    process, url = _start_worker(one_slice, redis_url)
    assert process.poll() is None
    asyncio.run(_store_input(redis_url, "r1"))
    answer: dict[str, object] = {}

    def call() -> None:
        request = urllib.request.Request(
            f"{url}/run",
            data=json.dumps({"request_id": "r1"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer["status"] = response.status
            answer["body"] = json.loads(response.read())

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.4)  # the run is under way
    process.send_signal(signal.SIGTERM)
    caller.join(60)
    assert answer.get("status") == 200, answer
    assert answer["body"]["timings_ms"]["compute"] > 200  # type: ignore[index]
    assert process.wait(30) == 0
    remaining = asyncio.run(_count(redis_url))
    assert remaining == 2  # the input and the output the run wrote before exiting


async def _count(redis_url: str) -> int:
    store = open_transport(redis_url, "default", "slow")
    try:
        return await store.count("r1")
    finally:
        await store.close()


def test_slice_file_comes_from_the_artifact_store(one_slice, redis_url, tmp_path) -> None:
    manifest = json.loads((one_slice / "manifest.json").read_text())
    entry = manifest["slices"][0]
    with ArtifactStore(redis_url) as store:
        assert store.put_file(one_slice / entry["file"]) == entry["sha256"]
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(one_slice / "manifest.json", bare / "manifest.json")  # the manifest alone, no slice files
    process, url = _start_worker(bare, redis_url, "--artifacts", redis_url, "--cache-dir", str(tmp_path / "cache"))
    try:
        assert process.poll() is None
        assert (tmp_path / "cache" / f"{entry['sha256']}.onnx").exists()
    finally:
        process.terminate()
        process.wait(30)
    with ArtifactStore(redis_url) as store:
        store.delete(entry["sha256"])
    process, _ = _start_worker(bare, redis_url, "--artifacts", redis_url, "--cache-dir", str(tmp_path / "other"))
    assert process.wait(30) != 0
    assert entry["sha256"][:12] in process.stdout.read().decode()  # type: ignore[union-attr]


@pytest.mark.parametrize("where", ["option", "manifest"])
def test_a_bad_codec_setting_stops_the_worker_at_start(one_slice, redis_url, tmp_path, where) -> None:
    manifest = json.loads((one_slice / "manifest.json").read_text())
    entry = manifest["slices"][0]
    extra: tuple[str, ...] = ()
    if where == "option":
        extra = ("--codec", "zstd99")
    else:
        entry["codecs"] = {o["name"]: "zstd99" for o in entry["outputs"]}
    directory = tmp_path / "slices"
    directory.mkdir()
    shutil.copy(one_slice / entry["file"], directory / entry["file"])
    (directory / "manifest.json").write_text(json.dumps(manifest))
    process, _ = _start_worker(directory, redis_url, *extra)
    assert process.wait(30) != 0
    output = process.stdout.read().decode()  # type: ignore[union-attr]
    assert "zstd level must be in -7..22, got 99" in output
    assert "Traceback" not in output


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_worker_answers_every_health_path_the_gateway_answers(tmp_path) -> None:
    slices = sliced(negate_twice(tmp_path / "negate.onnx"), tmp_path / "slices")
    serve = ServeProcess(slices)
    try:
        [(worker, _)] = serve.workers.values()
        for path in ("/v2/health/live", "/v2/health/ready", "/healthz", "/health/live", "/health/ready"):
            assert (_status(f"{serve.url}{path}"), _status(f"{worker}{path}")) == (200, 200), path
    finally:
        serve.stop()
