"""Nodes without names (ONNX allows them; exporters and hand-built graphs leave them): every
stage finds nodes by name, so a loaded model names them, and the whole flow (profile, plan,
slice, verify, serve) is exact on them. Two nodes sharing a name are refused in one line."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mopar.model.modelfile import load_model
from mopar.profile.trace import node_latencies
from slice_runtime import manifest as manifests
from slice_runtime.sessions import open_session
from tests.support import run_cli
from tests.support.serving import ServeProcess


def conv_mlp(path: Path, names: list[str] | None = None) -> Path:
    """A small convolution-and-MLP model whose nodes carry `names` ('' for none; default all
    unnamed). Written without names as exporters do, with no shape information to lean on."""
    rng = np.random.default_rng(0)
    weights = {
        "conv.w": rng.standard_normal((8, 3, 3, 3)),
        "conv.b": rng.standard_normal(8),
        "fc1.w": rng.standard_normal((8 * 4 * 4, 32)) * 0.1,
        "fc1.b": rng.standard_normal(32),
        "fc2.w": rng.standard_normal((32, 10)) * 0.1,
        "fc2.b": rng.standard_normal(10),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "fc2.w", "fc2.b"], ["y"]),
    ]
    for node, name in zip(nodes, names or [""] * len(nodes)):
        node.name = name
    graph = helper.make_graph(
        nodes,
        "convmlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def in_process(directory: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs from its slices run one after another in this process, each as served
    (pre-packed or not)."""
    manifest = manifests.load(directory)

    def run(entry: manifests.SliceEntry, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in entry.outputs]
        return dict(zip(names, open_session(manifest.path_of(entry), prepack=entry.prepack).run(names, inputs)))

    return manifests.run_in_process(manifest, feeds, run)


# Named in part, one name the generated one of another node would take ("Relu_5" is node 1).
PARTLY = ["", "Relu_5", "", "flatten", "", "", "head"]


def test_unnamed_nodes_get_unique_names_that_keep_the_given_ones(tmp_path) -> None:
    model = load_model(conv_mlp(tmp_path / "all.onnx"))
    assert [n.name for n in model.proto.graph.node] == [
        "Conv_0", "Relu_1", "MaxPool_2", "Flatten_3", "Gemm_4", "Relu_5", "Gemm_6",
    ]  # fmt: skip
    model = load_model(conv_mlp(tmp_path / "partly.onnx", PARTLY))
    names = [n.name for n in model.proto.graph.node]
    assert names == ["Conv_0", "Relu_5", "MaxPool_2", "flatten", "Gemm_4", "Relu_5_2", "head"]
    assert names == [n.name for n in load_model(tmp_path / "partly.onnx").proto.graph.node]  # every stage agrees


def test_two_nodes_sharing_a_name_are_refused_in_one_line(tmp_path) -> None:
    path = conv_mlp(tmp_path / "twins.onnx", ["", "act", "", "", "", "act", ""])
    done = run_cli("profile", str(path), "--runs", "1", "--no-memory")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()[-1:]
    assert "two nodes are named 'act'" in line and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.timeout(10)
def test_a_chain_that_comes_back_to_itself_ends() -> None:
    """Nodes all named '' made '' its own chain parent (and '', falsy, never counted as having a
    kernel): the walk back to a chain's head never ended. It stops where it comes back."""
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        {"cat": "Node", "name": "fused _kernel_time", "ts": 10, "dur": 40},  # a fused unnamed node
        {"cat": "Node", "name": "c_kernel_time", "ts": 60, "dur": 20},
    ]
    chain = {"": "", "c": "a", "a": "b", "b": "a"}
    medians, _ = node_latencies(events, ["", "a", "b", "c"], {}, warmup=0, chain_parent=chain)
    assert sum(medians.values()) == pytest.approx(0.06)


@pytest.mark.parametrize("names", [None, PARTLY], ids=["all-unnamed", "partly-unnamed"])
def test_unnamed_models_plan_slice_verify_and_serve_exactly(names: list[str] | None, tmp_path) -> None:
    path = conv_mlp(tmp_path / "convmlp.onnx", names)
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    done = run_cli("plan", str(path), "--slices", "3", "--no-split", "-o", str(plan), timeout=120)
    assert done.returncode == 0, done.stderr
    planned = [name for s in json.loads(plan.read_text())["slices"] for name in s["nodes"]]
    assert planned == [n.name for n in load_model(path).proto.graph.node] and all(planned)
    done = run_cli("slice", str(path), "--plan", str(plan), "-o", str(slices), timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((slices / "manifest.json").read_text())
    ops = [[n.op_type for n in onnx.load(str(slices / s["file"])).graph.node] for s in manifest["slices"]]
    assert sum(ops, []) == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"], ops
    done = run_cli("verify", str(slices), "--model", str(path), "--trials", "2", timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)

    # Served exactly as the slices compute in process (which verify held against the whole model:
    # fusions inside a slice may round differently from the whole model's).
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = in_process(slices, {"x": x})["y"]
    server = ServeProcess(slices)
    try:
        body = {"inputs": [{"name": "x", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}]}
        request = urllib.request.Request(
            f"{server.url}/v2/models/convmlp/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            [output] = json.loads(response.read())["outputs"]
    finally:
        server.stop()
    np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(1, 10), expected)
