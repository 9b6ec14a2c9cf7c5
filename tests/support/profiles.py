"""Synthetic profiles: a model's real structure (shapes, weights, FLOPs) with node times from a
fixed roofline instead of a clock, so a plan's shape is the same on every machine."""

from __future__ import annotations

import onnx

from mopar.model.modelfile import ModelFile
from mopar.profile import shapes
from mopar.profile.flops import node_flops
from mopar.profile.profiler import NodeProfile, Profile, machine_facts
from mopar.profile.splitcost import candidates
from slice_runtime.tensors import random_inputs

# One core's roofline, about what a 2020s x86 core does in onnxruntime at batch 1.
FLOPS_PER_MS = 50e6  # 50 GFLOP/s of arithmetic
BYTES_PER_MS = 10e6  # 10 GB/s of weights and outputs streamed
NODE_MS = 0.005  # a kernel launch


def synthetic_profile(model: ModelFile, serial_fraction: float = 0.1) -> Profile:
    """`model`'s profile with each node taking the longer of its arithmetic and its memory
    traffic (weights read, outputs written) on `FLOPS_PER_MS` / `BYTES_PER_MS`, and every
    split candidate keeping `serial_fraction` of its time when split."""
    feeds = random_inputs(model.inputs, seed=0, ranges=model.input_ranges)
    specs = shapes.tensor_specs(model.proto, feeds)
    graph = model.proto.graph
    sizes = {t.name: _bytes(t) for t in graph.initializer}
    shape_of = {name: spec.shape for name, spec in specs.items()}
    shape_of.update({t.name: tuple(t.dims) for t in graph.initializer})
    counted: set[str] = set()
    nodes = []
    for node in graph.node:
        weights = [n for n in node.input if n in sizes and n not in counted]
        counted.update(weights)
        outputs = [specs[o] for o in node.output if o in specs]
        weight_bytes = sum(sizes[n] for n in weights)
        output_bytes = sum(o.nbytes for o in outputs)
        flops = node_flops(node, shape_of)
        ms = max((flops or 0) / FLOPS_PER_MS, (weight_bytes + output_bytes) / BYTES_PER_MS) + NODE_MS
        nodes.append(NodeProfile(node.name, node.op_type, round(ms, 4), weight_bytes, output_bytes, flops, outputs))
    latency = round(sum(n.latency_ms for n in nodes), 4)
    batch = shapes.batch_facts(model, specs)
    return Profile(
        model={"name": model.name, "sha256": model.sha256, "file": str(model.path)},
        machine=machine_facts(1, "all"),
        settings={"runs": 0, "warmup": 0, "input_shapes": {k: list(v) for k, v in model.input_shapes.items()}},
        inputs=model.inputs,
        outputs=[specs.get(o.name, o) for o in model.outputs],
        nodes=nodes,
        totals={
            "latency_ms": latency,
            "profiled_run_ms": latency,
            "node_latency_ms": latency,
            "fallback_attributed_ms": 0.0,
            "weight_bytes": model.weight_bytes,
            "flops": sum(n.flops or 0 for n in nodes),
            "peak_memory_bytes": None,
            "peak_memory_unpacked_bytes": None,
            "runtime_baseline_bytes": None,
        },
        split_serial_fractions={
            name: serial_fraction for name in candidates(model.proto, {n.name: n.latency_ms for n in nodes})
        },
        batch=batch,
    )


def _bytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
