"""What splitting an operator really saves, measured: its serial fraction.

Splitting a convolution's output channels in two does not halve its time: every part
still reads and lays out the whole input. For each operator that might be split, the
operator alone and the operator computing half its channels are timed; with a part
of k taking t x (s + (1 - s) / k), the serial fraction s = 2 x half / whole - 1
(0 for a perfect split, 1 for none at all). The planner prices sub-slices with it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from mopar.model.splitting import split_axis, split_nodes
from slice_runtime.sessions import open_session
from slice_runtime.tensors import TensorSpec, onnx_of_dtype, random_inputs


def candidates(model: onnx.ModelProto, latency_ms: Mapping[str, float], share: float = 0.01) -> list[str]:
    """Splittable operators holding at least `share` of the model's weights or time."""
    initializers = {t.name: t for t in model.graph.initializer}
    sizes = {name: int(np.prod(t.dims)) for name, t in initializers.items()}
    total_weights, total_time = max(sum(sizes.values()), 1), max(sum(latency_ms.values()), 1e-9)
    chosen = []
    for node in model.graph.node:
        if len(node.input) < 2 or node.input[0] in initializers:
            continue
        # Timed alone, the operator needs every input but its first as a constant (an export may
        # compute a bias, or take it from a Constant node: then it is not measured here); the
        # weight it is split along must be there (Resize leaves its second input empty).
        if node.input[1] not in initializers or any(n and n not in initializers for n in node.input[2:]):
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if split_axis(node.op_type, attributes, tuple(initializers[node.input[1]].dims)) is None:
            continue
        if sizes[node.input[1]] >= share * total_weights or latency_ms.get(node.name, 0.0) >= share * total_time:
            chosen.append(node.name)
    return chosen


def serial_fractions(
    model: onnx.ModelProto,
    specs: Mapping[str, TensorSpec],
    names: Sequence[str],
    threads: int = 1,
    optimization: str = "all",
    runs: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    fractions = {}
    for done, name in enumerate(names, start=1):
        node = nodes[name]
        source, target = specs.get(node.input[0]), specs.get(node.output[0])
        if source is None or target is None:
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, channels = split_axis(node.op_type, attributes, tuple(initializers[node.input[1]].dims)) or (0, 0)
        if channels < 2:
            continue
        whole = _time(
            _one_node(model, [node], [initializers[n] for n in node.input[1:] if n], source, target),
            source,
            threads,
            optimization,
            runs,
        )
        half_nodes, half_weights = split_nodes(
            [node], initializers, axis, channels, len(target.shape), (0, channels // 2)
        )
        half = _time(_one_node(model, half_nodes, half_weights, source, None), source, threads, optimization, runs)
        fractions[name] = round(min(1.0, max(0.0, 2 * half / max(whole, 1e-9) - 1)), 4)
        if progress:
            progress(done, len(names))
    return fractions


def _one_node(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    weights: list[onnx.TensorProto],
    source: TensorSpec,
    target: TensorSpec | None,
) -> bytes:
    output = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "operator",
        [helper.make_tensor_value_info(source.name, onnx_of_dtype(source.dtype), list(source.shape))],
        [helper.make_tensor_value_info(output, onnx_of_dtype(target.dtype) if target else onnx.TensorProto.FLOAT,
                                       list(target.shape) if target else None)],
        weights,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=list(model.opset_import))
    proto.ir_version = model.ir_version
    return proto.SerializeToString()


def _time(serialized: bytes, source: TensorSpec, threads: int, optimization: str, runs: int) -> float:
    session = open_session(serialized, threads, optimization)
    feeds = random_inputs([source], seed=0)
    session.run(None, feeds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
