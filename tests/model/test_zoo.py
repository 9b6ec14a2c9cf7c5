"""The zoo: every model builds, passes the full ONNX check and runs; sizes match the papers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from mopar.model import zoo
from mopar.model.modelfile import load_model
from mopar.model.zoo.builder import architecture_only
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs
from tests.support import run_cli

NAMES = zoo.names()


def test_four_categories_of_the_reference_evaluation_are_covered() -> None:
    categories = {m.category for m in zoo.MODELS}
    assert categories == {"image classification", "object detection", "language", "dense prediction"}
    assert {"resnet50", "vgg16", "mobilenetv2", "yolov5s", "bert-base", "lstm", "edgestereo"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_small_variant_checks_and_runs_at_every_optimisation_level(name: str, small_model) -> None:
    path = small_model(name)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    model = load_model(path)
    feeds = random_inputs(model.inputs, seed=1, ranges=model.input_ranges)
    plain = open_session(path, optimization="disable").run(None, feeds)
    optimised = open_session(path, optimization="all").run(None, feeds)
    assert [o.name for o in model.outputs]
    for a, b, spec in zip(plain, optimised, model.outputs):
        assert np.isfinite(a).all(), f"{name}: {spec.name} has non-finite values"
        assert np.abs(a).max() > 0, f"{name}: {spec.name} is all zeros"
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameters_match_the_published_figure(name: str) -> None:
    model = zoo.get(name)
    params = zoo.architecture_params(name)
    if model.published_params is None:
        assert params > 1_000_000  # a real network, not a toy
    else:
        assert abs(params - model.published_params) / model.published_params < 0.02


def test_architecture_count_equals_the_weights_of_a_real_build() -> None:
    built = zoo.build("resnet50")
    learned = sum(int(np.prod(t.dims)) for t in built.graph.initializer)
    assert zoo.count_params(built) == zoo.architecture_params("resnet50") == learned


FULL_SIZE_OUTPUTS = {
    "resnet50": [(1, 1000)],
    "vgg16": [(1, 1000)],
    "mobilenetv2": [(1, 1000)],
    "yolov5s": [(1, 25200, 85)],
    "bert-base": [(1, 2)],
    "lstm": [(1, 2)],
    "edgestereo": [(1, 1, 256, 512), (1, 1, 64, 128)],
}


@pytest.mark.parametrize("name", NAMES)
def test_full_size_model_checks_and_runs(name: str, tmp_path) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(zoo.build(name), str(path))
    onnx.checker.check_model(str(path), full_check=True)
    model = load_model(path)
    outputs = open_session(path).run(None, random_inputs(model.inputs, ranges=model.input_ranges))
    assert [o.shape for o in outputs] == FULL_SIZE_OUTPUTS[name]
    assert all(np.isfinite(o).all() for o in outputs)


def test_published_layer_counts() -> None:
    def count(name: str, op: str) -> int:
        with architecture_only():
            return sum(n.op_type == op for n in zoo.build(name).graph.node)

    assert count("resnet50", "Conv") == 53  # 49 in stem and bottlenecks + 4 projections
    assert count("vgg16", "Conv") == 13 and count("vgg16", "Gemm") == 3
    assert count("mobilenetv2", "Conv") == 52
    assert count("bert-base", "LayerNormalization") == 1 + 2 * 12
    assert count("lstm", "LSTM") == 2


def test_weights_are_reproducible_from_the_seed() -> None:
    a, b = zoo.build_small("mobilenetv2", seed=3), zoo.build_small("mobilenetv2", seed=3)
    c = zoo.build_small("mobilenetv2", seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_models_list_json_has_the_documented_keys() -> None:
    done = run_cli("models", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == NAMES
    for row in rows:
        assert set(row) == {"name", "category", "params", "published_params"}


def test_models_build_writes_a_loadable_file(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    done = run_cli("models", "build", "lstm", "--scale", "0.25", "--set", "seq=16", "-o", str(out))
    assert done.returncode == 0, done.stderr
    model = load_model(out)
    assert model.inputs[0].shape == (1, 16)
