"""Small models cut into slices in-process (profile, plan, slice), for tests that serve them."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan
from mopar.profile.profiler import profile_model


def sliced(model_path: Path, directory: Path, max_slices: int = 2) -> Path:
    """`model_path` cut into at most `max_slices` slices in `directory` (latency objective, no fees:
    the planner cuts wherever it may)."""
    from mopar.slice.slicer import slice_model

    model = load_model(model_path)
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    free = pricing.Pricing(name="free-invocations", request_usd=0.0, gb_second_usd=1e-5, memory_min_mb=1)
    link = LinkModel(hop_ms=0.0, bytes_per_ms=1e9, invoke_ms=0.0)
    result = plan(graph, MemoryModel(1 * MB), link, free, Constraints(objective="latency", max_slices=max_slices))
    slice_model(model, planfile.to_json(result, profile.model, profile.tensor_specs, {}), directory)
    return directory


def negate_twice(path: Path, width: int = 64) -> Path:
    """y = -(-x) for x of shape [1, width]: outputs equal inputs bit for bit, NaN and infinities included."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])
    nodes = [helper.make_node("Neg", ["x"], ["h"], name="neg0"), helper.make_node("Neg", ["h"], ["y"], name="neg1")]
    model = helper.make_model(helper.make_graph(nodes, "negate", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path
