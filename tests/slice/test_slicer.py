"""Exactness: every zoo model plans, slices and verifies at every objective, with and without
sub-slices; every splittable operator splits exactly; generated DAGs slice exactly too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mopar.errors import UsageError
from mopar.model import zoo
from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, Coster, Plan, plan
from mopar.plan.segments import sweep
from mopar.profile.profiler import Profile, profile_model
from mopar.slice.slicer import slice_model
from mopar.slice.verify import verify
from slice_runtime import manifest as manifests
from tests.support import run_cli
from tests.support.profiles import synthetic_profile

MEMORY = MemoryModel(90 * MB)
LINK = LinkModel.load()


@pytest.fixture(scope="module")
def profiled(small_model):
    cache: dict[str, tuple[object, Profile]] = {}

    def get(name: str):  # type: ignore[no-untyped-def]
        if name not in cache:
            model = load_model(small_model(name))
            cache[name] = (model, profile_model(model, runs=3, warmup=1, measure_memory=False))
        return cache[name]

    return get


def _slice_and_verify(model, profile: Profile, result: Plan, directory: Path) -> manifests.Manifest:  # type: ignore[no-untyped-def]
    data = planfile.to_json(result, profile.model, profile.tensor_specs, {})
    slice_model(model, data, directory)
    report = verify(directory, model, trials=2)
    assert report.ok, report.differences
    return manifests.load(directory)


@pytest.mark.parametrize("split", [True, False], ids=["with-subslices", "without-subslices"])
@pytest.mark.parametrize("objective", ["cost", "latency", "slo"])
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_plans_slices_and_verifies(name: str, objective: str, split: bool, profiled, tmp_path) -> None:
    model, profile = profiled(name)
    graph = graphs.from_model(model.proto, profile)
    slo = None
    if objective == "slo":  # between the fastest plan and the whole model
        fastest = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="latency", split=split))
        slo = (fastest.latency_ms + fastest.figures([fastest.whole])["latency_ms"]) / 2 + 0.01
    result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective=objective, slo_ms=slo, split=split))
    manifest = _slice_and_verify(model, profile, result, tmp_path / "slices")
    assert len(manifest.stages()) == len(result.slices)
    if not split:
        assert all(entry.group is None for entry in manifest.slices)


@pytest.mark.parametrize("name", zoo.names())
def test_every_kind_of_split_is_exact(name: str, profiled, tmp_path) -> None:
    """Force sub-slices (k=3, or 2 for two channels) on splittable operators of each model: the
    first, one in the middle and the last, with the rest of the model in plain slices around them."""
    model, profile = profiled(name)
    graph = graphs.from_model(model.proto, profile)
    positions = set(graph.cut_positions(4))
    groups = [g for g in graph.split_groups(0.0) if g.start in positions and g.end in positions and g.channels >= 2]
    assert groups, f"{name} has no splittable operator at a valid cut"
    picked = {id(g): g for g in (groups[0], groups[len(groups) // 2], groups[-1])}.values()
    coster = Coster(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints())
    for index, group in enumerate(sorted(picked, key=lambda g: g.start)):
        bounds = [(0, group.start), (group.start, group.end), (group.end, len(graph))]
        options = []
        for a, b in bounds:
            if a == b:
                continue
            stats = next(sweep(graph, a, [b]))
            parts = min(3, group.channels) if (a, b) == (group.start, group.end) else 1
            option = coster.option(stats, parts, group if parts > 1 else None)
            assert option is not None
            options.append(option)
        result = Plan(graph, Constraints(), pricing.LAMBDA_FLAT, LINK, MEMORY, options, options[0], 0.0)
        manifest = _slice_and_verify(model, profile, result, tmp_path / f"split{index}")
        assert sum(entry.group is not None for entry in manifest.slices) == min(3, group.channels)


def _pad_pool_model(path: Path) -> Path:
    """Pad (zeros) then MaxPool over an all-negative input: the zero padding wins every window
    on the border; onnxruntime's fused Pad+MaxPool pads with -inf instead."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Neg", ["x"], ["n"], name="neg"),
        helper.make_node("Abs", ["n"], ["a"], name="abs"),
        helper.make_node("Neg", ["a"], ["negative"], name="make_negative"),
        helper.make_node("Pad", ["negative", "pads"], ["padded"], name="pad"),
        helper.make_node("MaxPool", ["padded"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sigmoid", ["pooled"], ["y"], name="sigmoid"),
    ]
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    graph = helper.make_graph(nodes, "padpool", [x], [y], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def test_pad_and_maxpool_stay_together_and_results_stay_exact(tmp_path) -> None:
    model = load_model(_pad_pool_model(tmp_path / "padpool.onnx"))
    profile = profile_model(model, runs=2, measure_memory=False)
    graph = graphs.from_model(model.proto, profile)
    assert 4 not in graph.cut_positions(8)  # between pad (3) and pool (4)
    for objective in ("cost", "latency"):
        result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective=objective, max_slices=6))
        _slice_and_verify(model, profile, result, tmp_path / objective)
    # The hazard is real: cut between them by hand, and at full optimisation the slices
    # compute zero padding while the whole model computes -inf padding.
    coster = Coster(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints())
    options = [coster.option(next(sweep(graph, a, [b]))) for a, b in ((0, 4), (4, 6))]
    forced = Plan(graph, Constraints(), pricing.LAMBDA_FLAT, LINK, MEMORY, options, options[0], 0.0)  # type: ignore[arg-type]
    slice_model(model, planfile.to_json(forced, profile.model, profile.tensor_specs, {}), tmp_path / "forced")
    assert not verify(tmp_path / "forced", model, trials=1, optimization="all").ok
    assert verify(tmp_path / "forced", model, trials=1, optimization="disable").ok


def random_onnx_dag(seed: int, n: int, path: Path) -> Path:
    """A random DAG of convolutions, activations, additions and concatenations with skip
    connections and two outputs, all at one spatial size."""
    rng = np.random.default_rng(seed)
    channels = {"x": 4}
    tensors = ["x"]
    nodes, inits = [], []
    for i in range(n):
        kind = rng.choice(["conv", "relu", "add", "concat", "mul"])
        a = tensors[-1] if rng.random() < 0.6 else str(rng.choice(tensors))
        b = str(rng.choice(tensors))
        out = f"t{i}"
        if kind == "conv" or (kind in ("add", "mul") and channels[a] != channels[b]):
            cout = int(rng.integers(2, 9))
            w, bias = f"w{i}", f"b{i}"
            inits += [
                numpy_helper.from_array(rng.standard_normal((cout, channels[a], 3, 3)).astype(np.float32) * 0.3, w),
                numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32) * 0.1, bias),
            ]
            nodes.append(helper.make_node("Conv", [a, w, bias], [out], name=f"conv{i}", pads=[1, 1, 1, 1]))
            channels[out] = cout
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [a], [out], name=f"relu{i}"))
            channels[out] = channels[a]
        elif kind == "concat":
            nodes.append(helper.make_node("Concat", [a, b], [out], name=f"concat{i}", axis=1))
            channels[out] = channels[a] + channels[b]
        else:
            nodes.append(helper.make_node("Add" if kind == "add" else "Mul", [a, b], [out], name=f"{kind}{i}"))
            channels[out] = channels[a]
        tensors.append(out)
    outputs = [tensors[-1], tensors[len(tensors) // 2]] if n > 2 else [tensors[-1]]
    graph = helper.make_graph(
        nodes,
        f"dag{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in dict.fromkeys(outputs)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(onnx.shape_inference.infer_shapes(model), str(path))
    return path


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 100_000), n=st.integers(2, 14), objective=st.sampled_from(["cost", "latency"]))
def test_generated_dags_slice_exactly(seed: int, n: int, objective: str, tmp_path_factory) -> None:
    directory = tmp_path_factory.mktemp("dag")
    model = load_model(random_onnx_dag(seed, n, directory / "dag.onnx"))
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    # A tiny baseline and free invocations make many-slice plans win: the hard case for slicing.
    cheap = pricing.Pricing(name="test", request_usd=0.0, gb_second_usd=1e-5, memory_min_mb=1)
    result = plan(
        graph,
        MemoryModel(1 * MB),
        LINK,
        cheap,
        Constraints(objective=objective, dominance=0.0, max_slices=n, max_cut_tensors=8),
    )
    _slice_and_verify(model, profile, result, directory / "slices")


def test_a_plan_for_another_model_is_refused(profiled, small_model, tmp_path) -> None:
    model, profile = profiled("mobilenetv2")
    graph = graphs.from_model(model.proto, profile)
    data = planfile.to_json(plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT), profile.model, profile.tensor_specs, {})
    other = load_model(small_model("resnet50"))
    with pytest.raises(UsageError, match="was made for model mobilenetv2"):
        slice_model(other, data, tmp_path / "x")
    (tmp_path / "plan.json").write_text(json.dumps(data))
    done = run_cli("slice", str(small_model("resnet50")), "--plan", str(tmp_path / "plan.json"), "-o", str(tmp_path))
    assert done.returncode == 2 and "plan it again" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_vgg16_isolates_the_classifier_and_splits_its_big_gemm(tmp_path) -> None:
    """Full-size VGG-16 planned from its architecture with roofline costs (a synthetic
    profile: a plan made from timings measured here would differ from machine to machine):
    the convolutions and the fully connected block go to different slices and, when latency
    matters (an SLO under the fastest plan without sub-slices, itself under the whole
    model's), the 392 MB fc1 Gemm is split."""
    path = tmp_path / "vgg16.onnx"
    onnx.save_model(zoo.build("vgg16"), str(path))
    model = load_model(path)
    graph = graphs.from_model(model.proto, synthetic_profile(model))
    fc_start = next(i for i, node in enumerate(graph.nodes) if node.name == "classifier.fc1/Gemm")
    cheapest = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="cost"))
    assert len(cheapest.slices) >= 2
    assert any(o.stats.end == fc_start or o.stats.end == fc_start - 1 for o in cheapest.slices[:-1])
    assert cheapest.cost_usd < cheapest.whole.cost_usd
    whole_latency = cheapest.figures([cheapest.whole])["latency_ms"]
    unsplit = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="latency", split=False))
    assert unsplit.latency_ms <= whole_latency
    slo = 0.97 * unsplit.latency_ms  # only sub-slices reach it
    fast = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="slo", slo_ms=slo))
    split = [o for o in fast.slices if o.parts > 1]
    assert any(o.group is not None and o.group.operator == "classifier.fc1/Gemm" for o in split)
    assert fast.latency_ms <= slo


def test_external_data_models_and_slices(small_model, tmp_path) -> None:
    """Weights kept beside the model (how models over 2 GB are stored) load, slice and verify;
    slices can keep theirs beside them too, and a damaged weights file is refused."""
    source = onnx.load(str(small_model("resnet50")))
    path = tmp_path / "external.onnx"
    onnx.save_model(source, str(path), save_as_external_data=True, location="external.onnx.data", size_threshold=0)
    model = load_model(path)
    assert model.weight_bytes > 1_000_000
    profile = profile_model(model, runs=1, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="latency"))
    data = planfile.to_json(result, profile.model, profile.tensor_specs, {})
    manifest = slice_model(model, data, tmp_path / "slices", external_data_above=0)
    assert all(entry.data_file for entry in manifest.slices)
    assert verify(tmp_path / "slices", model, trials=1).ok
    data_file = tmp_path / "slices" / manifest.slices[0].data_file
    data_file.write_bytes(data_file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(manifests.ManifestError, match="sha256"):
        manifests.load(tmp_path / "slices").verify_files()
