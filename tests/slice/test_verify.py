"""`mopar verify`'s rule: a partition whose outputs differ from the whole model's only by float
rounding passes; a slicing error (a wrong tensor wired, a weight off by 0.1 %) fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mopar.model.modelfile import load_model
from mopar.slice.verify import compare, verify
from slice_runtime.manifest import sha256_file
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs
from tests.support import run_cli

K, N = 4096, 2048
CUT = 1237  # an inner dimension split where no GEMM block boundary falls: the sums round differently


def _matmul(weights: np.ndarray, split_at: int | None = None) -> onnx.ModelProto:
    """y = x @ W, or the same product as two partial products over x's halves, added."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])
    if split_at is None:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
        initializers = [numpy_helper.from_array(weights, "w")]
    else:
        nodes = [
            helper.make_node("Split", ["x", "sizes"], ["xa", "xb"], axis=1, name="split"),
            helper.make_node("MatMul", ["xa", "wa"], ["ya"], name="mm_a"),
            helper.make_node("MatMul", ["xb", "wb"], ["yb"], name="mm_b"),
            helper.make_node("Add", ["ya", "yb"], ["y"], name="sum"),
        ]
        initializers = [
            numpy_helper.from_array(np.array([split_at, K - split_at], np.int64), "sizes"),
            numpy_helper.from_array(weights[:split_at], "wa"),
            numpy_helper.from_array(weights[split_at:], "wb"),
        ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], initializers), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


def _sliced(model: Path, tmp_path: Path, *plan_options: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    plan, slices = tmp_path / "plan.json", tmp_path / "slices"
    assert run_cli("plan", str(model), *plan_options, "-o", str(plan)).returncode == 0
    assert run_cli("slice", str(model), "--plan", str(plan), "-o", str(slices)).returncode == 0
    return slices, json.loads((slices / "manifest.json").read_text())


def _replace_slice(slices: Path, manifest: dict, index: int, edit: Callable[[onnx.ModelProto], None]) -> None:  # type: ignore[type-arg]
    path = slices / manifest["slices"][index]["file"]
    proto = onnx.load(str(path))
    edit(proto)
    onnx.save_model(proto, str(path))
    manifest["slices"][index]["sha256"] = sha256_file(path)
    (slices / "manifest.json").write_text(json.dumps(manifest))


def test_a_partition_off_only_by_float_rounding_passes(tmp_path: Path) -> None:
    weights = (np.random.default_rng(0).standard_normal((K, N)) * 3).astype(np.float32)
    path = tmp_path / "matmul.onnx"
    onnx.save_model(_matmul(weights), str(path))
    slices, manifest = _sliced(path, tmp_path, "--no-split", "--max-slices", "1")
    (entry,) = manifest["slices"]
    _replace_slice(slices, manifest, 0, lambda proto: proto.graph.CopyFrom(_matmul(weights, CUT).graph))

    # The same products summed in another order: elementwise rtol 1e-4 / atol 1e-5 fails on
    # outputs near zero, though the whole output is within 1e-6 of its largest magnitude.
    model = load_model(path)
    feeds = random_inputs(model.inputs, seed=0, ranges=model.input_ranges)
    (whole,) = open_session(model.serialized()).run(None, feeds)
    (parts,) = open_session(str(slices / entry["file"])).run(None, feeds)
    assert 0 < np.abs(whole - parts).max() < 1e-6 * np.abs(whole).max()
    assert not np.allclose(parts, whole, rtol=1e-4, atol=1e-5)

    report = verify(slices, model, trials=3)
    assert report.ok, report.differences
    done = run_cli("verify", str(slices), "--model", str(path), "--trials", "1")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # --rtol/--atol override the rule: at zero tolerance the rounding is a difference.
    done = run_cli("verify", str(slices), "--model", str(path), "--trials", "1", "--rtol", "0", "--atol", "0")
    assert done.returncode == 1 and "NO" in done.stdout


def test_a_wrong_tensor_wired_in_one_slice_fails(small_model: Callable[[str], Path], tmp_path: Path) -> None:
    model = small_model("mobilenetv2")
    slices, manifest = _sliced(model, tmp_path, "--objective", "latency", "--max-slices", "3")

    def residual(proto: onnx.ModelProto) -> onnx.NodeProto | None:
        weights = {i.name for i in proto.graph.initializer}
        return next((n for n in proto.graph.node if n.op_type == "Add" and not weights & set(n.input)), None)

    index = next(i for i, s in enumerate(manifest["slices"]) if residual(onnx.load(str(slices / s["file"]))))

    def rewire(proto: onnx.ModelProto) -> None:
        node = residual(proto)
        assert node is not None
        node.input[1] = node.input[0]  # x + x where the block computes x + f(x): same shape, wrong tensor

    _replace_slice(slices, manifest, index, rewire)
    report = verify(slices, load_model(model), trials=1)
    assert not report.ok


def test_one_weight_off_by_a_tenth_of_a_percent_fails(small_model: Callable[[str], Path], tmp_path: Path) -> None:
    model = small_model("mobilenetv2")
    slices, manifest = _sliced(model, tmp_path, "--objective", "latency", "--max-slices", "3")

    def perturb(proto: onnx.ModelProto) -> None:
        weight = max(proto.graph.initializer, key=lambda w: int(np.prod(w.dims)))
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.001), weight.name))

    _replace_slice(slices, manifest, len(manifest["slices"]) - 1, perturb)
    done = run_cli("verify", str(slices), "--model", str(model), "--trials", "1")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "NO" in done.stdout and "beyond tolerance" in done.stderr


def test_the_rule_is_relative_to_the_outputs_magnitude_and_exact_for_integers() -> None:
    expected = np.array([100.0, 0.0, -3.0], np.float32)
    assert compare("y", expected, expected + np.float32(5e-3)).within  # 5e-3 <= 1e-4 * 100 + 1e-5
    assert not compare("y", expected, expected + np.float32(2e-2)).within
    assert not compare("y", expected, np.array([100.0, np.nan, -3.0], np.float32)).within
    assert compare("y", np.array([np.inf, 1], np.float32), np.array([np.inf, 1], np.float32)).within
    assert not compare("i", np.array([1, 2]), np.array([1, 3])).within
