"""Floating-point operations of one node, from its input and output shapes (pure).

A multiply-add counts as two operations. Data movement (Reshape, Transpose, Concat,
Gather...) counts as zero; elementwise and normalising ops as a few per element;
an op we do not know returns None ("not computable").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import onnx

Shape = Sequence[int]

_MOVEMENT = {
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Shape",
    "Cast",
    "Expand",
    "Pad",
    "Tile",
    "Constant",
    "ConstantOfShape",
    "Resize",
    "DepthToSpace",
    "SpaceToDepth",
    "Dropout",
    "Range",
    "GatherElements",
    "ScatterND",
    "Where",
}
_ELEMENTWISE = {
    "Add": 1,
    "Sub": 1,
    "Mul": 1,
    "Div": 1,
    "Relu": 1,
    "LeakyRelu": 2,
    "Clip": 1,
    "Max": 1,
    "Min": 1,
    "Neg": 1,
    "Abs": 1,
    "Sqrt": 1,
    "Pow": 1,
    "Sigmoid": 4,
    "Tanh": 4,
    "Erf": 4,
    "Exp": 1,
    "Log": 1,
    "HardSigmoid": 3,
    "HardSwish": 4,
    "Softmax": 5,
    "LayerNormalization": 8,
    "BatchNormalization": 2,
    "InstanceNormalization": 8,
    "Equal": 1,
    "Greater": 1,
    "Less": 1,
    "Not": 1,
    "And": 1,
    "Or": 1,
    "ReduceMean": 1,
    "ReduceSum": 1,
    "ReduceMax": 1,
    "GlobalAveragePool": 1,
    "GlobalMaxPool": 1,
}


def node_flops(node: onnx.NodeProto, shapes: Mapping[str, Shape]) -> int | None:
    """Operations of `node`; `shapes` maps tensor names (inputs, outputs, weights) to shapes."""
    ins = [shapes.get(name) for name in node.input]
    outs = [shapes.get(name) for name in node.output]
    op = node.op_type
    if op in _MOVEMENT:
        return 0
    if not outs or outs[0] is None:
        return None
    out_elems = math.prod(outs[0])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op == "Conv" and len(ins) > 1 and ins[1] is not None:
        weight = ins[1]  # [Cout, Cin/group, kh, kw]
        return 2 * out_elems * math.prod(weight[1:])
    if op == "ConvTranspose" and ins[0] is not None and len(ins) > 1 and ins[1] is not None:
        weight = ins[1]  # [Cin, Cout/group, kh, kw]
        return 2 * math.prod(ins[0]) * math.prod(weight[1:])
    if op == "Gemm" and ins[0] is not None:
        k = ins[0][0] if attrs.get("transA", 0) else ins[0][-1]
        return 2 * out_elems * k
    if op == "MatMul" and ins[0] is not None:
        return 2 * out_elems * ins[0][-1]
    if op in ("LSTM", "GRU", "RNN") and ins[0] is not None and ins[1] is not None and ins[2] is not None:
        seq = ins[0][0]
        gates_x_input = math.prod(ins[1])  # [dirs, gates*H, input]
        gates_x_hidden = math.prod(ins[2])  # [dirs, gates*H, H]
        return 2 * seq * (gates_x_input + gates_x_hidden)
    if op in ("MaxPool", "AveragePool"):
        return out_elems * math.prod(attrs.get("kernel_shape", [1]))
    if op in _ELEMENTWISE:
        biggest = max((math.prod(s) for s in ins if s is not None), default=out_elems)
        return _ELEMENTWISE[op] * max(out_elems, biggest)
    return None
