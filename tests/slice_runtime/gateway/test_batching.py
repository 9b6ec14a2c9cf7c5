"""Any batch size: a ResNet exported with a symbolic batch axis, profiled at batch 1, cut into
slices that keep the axis symbolic, served by real workers, answers every batch from 1 to its
maximum as the whole model does; beyond it, a 400. Dynamic batching: concurrent requests share
one run of the slices, and each gets the answer it gets alone."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

from mopar.model import zoo
from mopar.slice.verify import TOLERANCE
from slice_runtime import manifest as manifests
from slice_runtime import v2
from slice_runtime.gateway.batching import BatchingPolicy
from slice_runtime.local import LocalServer, free_port
from slice_runtime.sessions import open_session
from tests.support import ServerThread
from tests.support.slicing import sliced

MODEL, MAX_BATCH = "resnet", 8
RTOL, ATOL = TOLERANCE["float32"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("batching") / f"{MODEL}.onnx"
    onnx.save_model(zoo.build("resnet50", scale=0.125, image=32, batch="dynamic"), str(path))
    return path


@pytest.fixture(scope="module")
def slices(model_file):  # type: ignore[no-untyped-def]
    return sliced(model_file, model_file.parent / "slices", slices=2, max_batch=MAX_BATCH)


@pytest.fixture(scope="module")
def served(slices):  # type: ignore[no-untyped-def]
    thread = ServerThread(LocalServer(slices, transport="shm", port=free_port(), name=MODEL))
    yield thread
    thread.stop()


def infer(url: str, feeds: dict[str, np.ndarray]) -> tuple[int, bytes, dict[str, str]]:
    body, headers = v2.encode_request(feeds, binary=True, binary_outputs=True)
    request = urllib.request.Request(f"{url}/v2/models/{MODEL}/infer", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def images(batch: int, seed: int) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


def test_the_batch_stays_symbolic_in_the_slices_and_the_manifest(slices) -> None:
    manifest = manifests.load(slices)
    assert len(manifest.slices) == 2 and manifest.max_batch_size == MAX_BATCH
    assert [s.shape for s in manifest.inputs] == [(-1, 3, 32, 32)]
    assert [s.shape for s in manifest.outputs] == [(-1, 1000)]
    for entry in manifest.slices:
        for value in [
            *onnx.load(str(slices / entry.file)).graph.input,
            *onnx.load(str(slices / entry.file)).graph.output,
        ]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (entry.id, value.name)
    assert manifest.plan["batch"]["max"] == MAX_BATCH and manifest.plan["memory_model"]["batch_scale"] == MAX_BATCH


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_every_batch_up_to_the_maximum_answers_as_the_whole_model(served, model_file, batch: int) -> None:
    whole = open_session(model_file.read_bytes())  # the model as exported: symbolic batch
    feeds = images(batch, seed=batch)
    [expected] = whole.run(None, feeds)
    status, body, headers = infer(served.server.url, feeds)
    assert status == 200, body
    got = v2.decode_response(body, headers.get(v2.HEADER_LENGTH))["logits"]
    assert got.shape == (batch, 1000)
    # Within `mopar verify`'s float tolerance: a slice may pre-pack its weights where the whole
    # model does not (the plan's choice), and packed kernels round differently.
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_a_batch_beyond_the_maximum_is_refused(served) -> None:
    status, body, _ = infer(served.server.url, images(MAX_BATCH + 1, seed=0))
    assert status == 400
    assert json.loads(body)["error"] == f"a batch of 9: this model takes batches of 1 to {MAX_BATCH}"


@pytest.fixture(scope="module")
def batching(slices):  # type: ignore[no-untyped-def]
    """The same slices behind a gateway that batches: a request waits up to a second for others
    (a full batch goes at once, so the test does not wait it out)."""
    policy = BatchingPolicy(max_queue_delay_microseconds=1_000_000)
    thread = ServerThread(LocalServer(slices, transport="shm", port=free_port(), name=MODEL, batching=policy))
    yield thread
    thread.stop()


def runs(server: LocalServer) -> int:
    """Runs of the first slice, from its worker's /stats: one per batch."""
    with urllib.request.urlopen(f"{server.workers['s0'].url}/stats", timeout=10) as response:
        return int(json.loads(response.read())["runs"])


def test_concurrent_requests_are_merged_and_each_answer_is_its_own(served, batching) -> None:
    requests = [images(batch, seed=10 + i) for i, batch in enumerate((3, 1, 2, 1, 1))]  # 8 in all
    alone = [infer(served.server.url, feeds) for feeds in requests]
    before = runs(batching.server)
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda feeds: infer(batching.server.url, feeds), requests))
    assert runs(batching.server) - before == 1 and batching.server.plane.batcher.batches == 1
    for (status, body, headers), (_, reference, reference_headers) in zip(together, alone):
        assert status == 200, body
        got = v2.decode_response(body, headers.get(v2.HEADER_LENGTH))["logits"]
        want = v2.decode_response(reference, reference_headers.get(v2.HEADER_LENGTH))["logits"]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_a_request_alone_goes_once_its_delay_is_over(slices) -> None:
    policy = BatchingPolicy(max_queue_delay_microseconds=20_000)
    thread = ServerThread(LocalServer(slices, transport="shm", port=free_port(), name=MODEL, batching=policy))
    try:
        status, body, _ = infer(thread.server.url, images(2, seed=3))
        assert status == 200, body
        assert thread.server.plane.batcher.batches == 1
    finally:
        thread.stop()
