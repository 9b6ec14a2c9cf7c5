"""Splitting an operator along its output channels, as an ONNX rewrite (pure).

Which axis an operator splits along (Conv along output channels, Gemm and MatMul along N),
which constants of its channel-wise tail split with it, and the nodes and weights that
compute only a range of the channels. The profiler times a split operator with these
(`profile.splitcost`), the planner groups splittable nodes with them (`plan.graph`), and the
slicer writes the sub-slices with them (`slice.slicer`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper


def split_axis(op_type: str, attributes: Mapping[str, object], weight: Sequence[int]) -> tuple[int, int] | None:
    """(axis, channels) along which an operator's output splits by splitting its weight (input 1):
    Conv (one group) along output channels, Gemm and MatMul along N; None for anything else."""
    if op_type == "Conv" and attributes.get("group", 1) == 1 and len(weight) == 4:
        return 1, weight[0]
    if op_type == "Gemm" and len(weight) == 2 and not attributes.get("transA", 0):
        return 1, weight[0] if attributes.get("transB", 0) else weight[1]
    if op_type == "MatMul" and len(weight) == 2:
        return -1, weight[1]
    return None


def constant_axis(shape: Sequence[int], axis: int, channels: int, rank: int) -> int | None:
    """Where a constant of `shape`, broadcast against a rank-`rank` output split along `axis`,
    must itself be split: -1 for a scalar (not at all), its aligned axis for one value per
    channel, None if it can be neither."""
    if math.prod(shape) == 1:
        return -1
    aligned = (axis if axis >= 0 else rank + axis) - (rank - len(shape))
    if 0 <= aligned < len(shape) and shape[aligned] == channels and math.prod(shape) == channels:
        return aligned
    return None


def channel_bounds(channels: int, k: int) -> list[tuple[int, int]]:
    """k contiguous, near-equal ranges covering [0, channels)."""
    edges = np.linspace(0, channels, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def split_nodes(
    members: Sequence[onnx.NodeProto],
    initializers: Mapping[str, onnx.TensorProto],
    axis: int,
    channels: int,
    output_rank: int,
    bounds: tuple[int, int],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A dominant operator and its channel-wise tail computing only channels [start, stop) of
    their output: the operator's weights (and per-channel constants) cut to those channels."""
    head, tail = members[0], members[1:]
    start, stop = bounds
    weights: list[onnx.TensorProto] = []
    taken: set[str] = set()

    def take(name: str, along: int) -> str:
        if along < 0:  # a scalar: taken whole
            if name not in taken:
                taken.add(name)
                weights.append(initializers[name])
            return name
        piece = np.take(numpy_helper.to_array(initializers[name]), range(start, stop), axis=along)
        new = f"{name}__ch{start}_{stop}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(piece), new))
        return new

    head_inputs = list(head.input)
    head_inputs[1] = take(head.input[1], _weight_axis(head))
    if len(head_inputs) > 2 and head_inputs[2]:  # Conv bias (one per output channel) / Gemm C (broadcast)
        shape = tuple(initializers[head_inputs[2]].dims)
        bias_axis = 0 if head.op_type == "Conv" else constant_axis(shape, axis, channels, output_rank)
        if bias_axis is None:
            raise ValueError(f"cannot split the bias of {head.name}")
        head_inputs[2] = take(head.input[2], bias_axis)
    body = [copy_node(head, inputs=head_inputs)]
    for node in tail:
        node_inputs = list(node.input)
        for i, name in enumerate(node_inputs):
            if name in initializers:
                along = constant_axis(tuple(initializers[name].dims), axis, channels, output_rank)
                if along is None:
                    raise ValueError(f"cannot split constant {name} of {node.name}")
                node_inputs[i] = take(name, along)
        body.append(copy_node(node, inputs=node_inputs))
    return body, weights


def _weight_axis(node: onnx.NodeProto) -> int:
    """Axis of the weight (input 1) that indexes the output channels."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    return 1  # MatMul: B is [K, N]


def copy_node(node: onnx.NodeProto, inputs: Sequence[str]) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(inputs)
    return new
