"""Small models cut into slices in-process (profile, plan, slice), for tests that serve them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from mopar.errors import PlanError
from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import planfile, pricing
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan
from mopar.plan.planning import batch_scale
from mopar.profile.profiler import profile_model


def sliced(
    model_path: Path,
    directory: Path,
    slices: int = 1,
    max_batch: int | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """`model_path` cut into `slices` slices (no sub-slices) in `directory`: no fees, free links,
    and the largest memory bound per slice that makes the planner cut that many; a model with a
    symbolic batch takes batches up to `max_batch`; `edit` changes the plan.json before it is cut."""
    from mopar.slice.slicer import slice_model

    model = load_model(model_path)
    profile = profile_model(model, runs=1, warmup=0, measure_memory=False, measure_compression=False)
    graph = graphs.from_model(model.proto, profile)
    free = pricing.Pricing(name="free-invocations", request_usd=0.0, gb_second_usd=1e-5, memory_min_mb=1)
    link = LinkModel(hop_ms=0.0, bytes_per_ms=1e9, invoke_ms=0.0)
    memory = MemoryModel(1 * MB, activation_factor=10.0)  # activations weigh: bounds in whole MB can cut them
    memory = replace(memory, batch_scale=batch_scale(profile, Constraints(max_batch=max_batch)))
    result = plan(
        graph, memory, link, free, Constraints(objective="latency", max_slices=1, split=False, max_batch=max_batch)
    )
    bound = int(result.slices[0].need_mb)
    while len(result.slices) < slices:
        assert bound > 1, f"no memory bound cuts {model_path.name} into {slices} slices"
        constraints = Constraints(
            objective="latency", max_slices=slices, split=False, max_slice_memory_mb=bound, max_batch=max_batch
        )
        try:
            result = plan(graph, memory, link, free, constraints)
        except PlanError:
            pass
        bound -= 1
    data = planfile.to_json(result, profile.model, profile.tensor_specs, {}, profile.batch)
    if edit is not None:
        edit(data)
    slice_model(model, data, directory)
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
