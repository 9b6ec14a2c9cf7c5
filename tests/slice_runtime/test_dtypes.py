"""After Triton's qa/L0_infer: OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1 for every
numeric dtype mix, in models whose nodes have no names, with and without a batch dimension,
cut in two, served by `mopar serve`, and checked exactly against the whole model over REST
JSON, REST binary tensors and gRPC, spoken by tritonclient.

Each mix is a branch of one model (one per batch kind), so one deployment serves them all:
its inputs are cast to a common type, added and subtracted in the first slice, and cast to
the output types in the second; every branch crosses the cut."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from onnx import helper

from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, Coster, Plan
from mopar.plan.planning import batch_scale
from mopar.plan.segments import sweep
from mopar.slice.slicer import slice_model
from slice_runtime.sessions import open_session
from tests.support import free_port
from tests.support.profiles import synthetic_profile
from tests.support.serving import ServeProcess

# (INPUT0, INPUT1, OUTPUT0, OUTPUT1) element types, Triton's mixes: each type alone, then
# narrowing, widening, integers to floats and back, and inputs of two types.
MIXES = [
    *((t, t, t, t) for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "FP16", "FP32", "FP64")),
    ("INT32", "INT32", "INT8", "INT16"),
    ("INT8", "INT8", "INT32", "INT64"),
    ("FP32", "FP32", "FP16", "FP64"),
    ("FP16", "FP16", "FP32", "FP64"),
    ("INT32", "INT32", "FP32", "FP64"),
    ("FP32", "FP32", "INT32", "INT64"),
    ("UINT8", "INT8", "INT16", "FP32"),
    ("INT64", "FP64", "FP64", "INT64"),
]
ONNX_TYPE = {
    "INT8": onnx.TensorProto.INT8,
    "INT16": onnx.TensorProto.INT16,
    "INT32": onnx.TensorProto.INT32,
    "INT64": onnx.TensorProto.INT64,
    "UINT8": onnx.TensorProto.UINT8,
    "FP16": onnx.TensorProto.FLOAT16,
    "FP32": onnx.TensorProto.FLOAT,
    "FP64": onnx.TensorProto.DOUBLE,
}
NUMPY = {name: onnx.helper.tensor_dtype_to_np_dtype(t) for name, t in ONNX_TYPE.items()}
WIDTH = 16
MAX_BATCH = 8


def tag(mix: tuple[str, ...]) -> str:
    return mix[0].lower() if len(set(mix)) == 1 else "_".join(t.lower() for t in mix)


def common_type(a: str, b: str) -> str:
    """Where onnxruntime adds and subtracts the pair (it has no Add for 8- and 16-bit integers)."""
    if "FP64" in (a, b):
        return "FP64"
    if a.startswith("FP") or b.startswith("FP"):
        return "FP32"
    return "INT64" if "INT64" in (a, b) else "INT32"


def qa_model(path: Path, batch: bool) -> Path:
    """Every mix's branch, nodes unnamed: casts, Add and Sub of all branches first, then the
    casts to the output types, so a cut between the two stages crosses every branch."""
    dims: list[int | str] = ["batch", WIDTH] if batch else [WIDTH]
    inputs, outputs, first, second = [], [], [], []
    for mix in MIXES:
        t, common = tag(mix), common_type(mix[0], mix[1])
        for i in (0, 1):
            inputs.append(helper.make_tensor_value_info(f"INPUT{i}_{t}", ONNX_TYPE[mix[i]], dims))
            outputs.append(helper.make_tensor_value_info(f"OUTPUT{i}_{t}", ONNX_TYPE[mix[2 + i]], dims))
            first.append(helper.make_node("Cast", [f"INPUT{i}_{t}"], [f"in{i}_{t}"], to=ONNX_TYPE[common]))
        first.append(helper.make_node("Add", [f"in0_{t}", f"in1_{t}"], [f"sum_{t}"]))
        first.append(helper.make_node("Sub", [f"in0_{t}", f"in1_{t}"], [f"difference_{t}"]))
        second.append(helper.make_node("Cast", [f"sum_{t}"], [f"OUTPUT0_{t}"], to=ONNX_TYPE[mix[2]]))
        second.append(helper.make_node("Cast", [f"difference_{t}"], [f"OUTPUT1_{t}"], to=ONNX_TYPE[mix[3]]))
    graph = helper.make_graph([*first, *second], path.stem, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def cut_in_two(path: Path, directory: Path) -> Path:
    """The model sliced between its two stages (a synthetic profile: no timing decides anything)."""
    assert not any(node.name for node in onnx.load(str(path)).graph.node)
    model = load_model(path)
    profile = synthetic_profile(model)
    graph = graphs.from_model(model.proto, profile)
    cut = len(graph) - 2 * len(MIXES)
    assert cut in graph.cut_positions(4 * len(MIXES))
    constraints = Constraints(objective="latency", split=False, max_batch=MAX_BATCH if model.batched else None)
    memory = MemoryModel(1 * MB)
    memory = replace(memory, batch_scale=batch_scale(profile, constraints))
    link = LinkModel.load()
    coster = Coster(graph, memory, link, pricing.LAMBDA, constraints)
    options = [coster.option(next(sweep(graph, a, [b]))) for a, b in ((0, cut), (cut, len(graph)))]
    assert all(options)
    result = Plan(graph, constraints, pricing.LAMBDA, link, memory, options, options[0], 0.0)  # type: ignore[arg-type]
    manifest = slice_model(
        model, planfile.to_json(result, profile.model, profile.tensor_specs, {}, profile.batch), directory
    )
    assert [len(onnx.load(str(directory / e.file)).graph.node) for e in manifest.slices] == [cut, len(graph) - cut]
    return directory


def feeds(batch: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Small values (sums and differences fit every output type; floats with fractions that
    FP16 holds exactly), negative ones but for UINT8."""
    rng = np.random.default_rng(seed)
    shape = (batch, WIDTH) if batch else (WIDTH,)
    values = {}
    for mix in MIXES:
        for i in (0, 1):
            dtype = NUMPY[mix[i]]
            low = 0 if dtype.kind == "u" else -40
            drawn = rng.integers(low, 40, size=shape)
            values[f"INPUT{i}_{tag(mix)}"] = (drawn / 4 if dtype.kind == "f" else drawn).astype(dtype)
    return values


class Deployment:
    def __init__(self, server: ServeProcess, grpc_url: str, name: str, batched: bool, whole: Path) -> None:
        self.server, self.grpc_url, self.name, self.batched = server, grpc_url, name, batched
        self.whole = open_session(whole)

    def expected(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.whole.get_outputs()]
        return dict(zip(names, self.whole.run(names, inputs)))


@pytest.fixture(scope="module", params=[True, False], ids=["batch", "no-batch"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:  # type: ignore[no-untyped-def]
    batched = request.param
    name = "qa_dtypes_batch" if batched else "qa_dtypes_nobatch"
    directory = tmp_path_factory.mktemp(name)
    path = qa_model(directory / f"{name}.onnx", batched)
    slices = cut_in_two(path, directory / "slices")
    server = ServeProcess(slices, "--grpc-port", str(grpc_port := free_port()))
    try:
        yield Deployment(server, f"127.0.0.1:{grpc_port}", name, batched, path)
    finally:
        server.stop()


def infer_http(deployment: Deployment, inputs: dict[str, np.ndarray], binary: bool) -> dict[str, np.ndarray]:
    request = []
    for name, array in inputs.items():
        tensor = triton_http.InferInput(name, list(array.shape), f"{dtype_name(array)}")
        tensor.set_data_from_numpy(array, binary_data=binary)
        request.append(tensor)
    wanted = [triton_http.InferRequestedOutput(o, binary_data=binary) for o in output_names()]
    with triton_http.InferenceServerClient(deployment.server.url.removeprefix("http://")) as client:
        result = client.infer(deployment.name, request, outputs=wanted)
    return {o: result.as_numpy(o) for o in output_names()}


def infer_grpc(deployment: Deployment, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    request = []
    for name, array in inputs.items():
        tensor = triton_grpc.InferInput(name, list(array.shape), dtype_name(array))
        tensor.set_data_from_numpy(array)
        request.append(tensor)
    wanted = [triton_grpc.InferRequestedOutput(o) for o in output_names()]
    with triton_grpc.InferenceServerClient(deployment.grpc_url) as client:
        result = client.infer(deployment.name, request, outputs=wanted)
    return {o: result.as_numpy(o) for o in output_names()}


def dtype_name(array: np.ndarray) -> str:
    return next(name for name, dtype in NUMPY.items() if dtype == array.dtype)


def output_names() -> list[str]:
    return [f"OUTPUT{i}_{tag(mix)}" for mix in MIXES for i in (0, 1)]


@pytest.mark.parametrize("protocol", ["rest-json", "rest-binary", "grpc"])
def test_every_dtype_mix_is_served_exactly(deployment: Deployment, protocol: str) -> None:
    for batch in (1, 3) if deployment.batched else (None,):
        inputs = feeds(batch, seed=batch or 0)
        if protocol == "grpc":
            got = infer_grpc(deployment, inputs)
        else:
            got = infer_http(deployment, inputs, binary=protocol == "rest-binary")
        for name, expected in deployment.expected(inputs).items():
            assert got[name].dtype == expected.dtype and got[name].shape == expected.shape, (name, batch)
            np.testing.assert_array_equal(got[name], expected, err_msg=f"{name}, batch {batch}")
