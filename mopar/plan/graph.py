"""The model as the planner sees it: nodes in topological order with their costs (pure).

A slice is a contiguous run of nodes [a, b) in this order, so a slice's inputs are
always produced earlier (by an earlier slice, or the request). Position p (between
node p-1 and node p) is a cut; the tensors crossing it are those produced before p and
needed at or after p. Cuts that would separate a Pad from the pool or convolution it
feeds are never offered: onnxruntime fuses that pair when it sees both, and the fused
MaxPool pads with -inf instead of 0, so a cut there would change the model's results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import onnx

from mopar.model.splitting import constant_axis, split_axis
from mopar.profile import scaling

if TYPE_CHECKING:  # the profile is read here, never made: no import cycle with profiling
    from mopar.profile.profiler import Profile

GRAPH_INPUT = -1  # producer index of a tensor the request brings

# Ops applied element by element, so they commute with splitting a tensor's channels.
CHANNELWISE = {
    "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Erf", "Neg", "Abs", "Sqrt",
    "Exp", "Identity", "Add", "Sub", "Mul", "Div", "Elu", "Selu", "Softplus", "Gelu",
}  # fmt: skip
_FUSES_PAD = {"MaxPool", "AveragePool", "Conv"}


@dataclass(frozen=True)
class Node:
    name: str
    op_type: str
    inputs: tuple[str, ...]  # activations read (initializers excluded; a subgraph's outer-scope reads included)
    outputs: tuple[str, ...]
    weights: tuple[str, ...] = ()  # initializers read
    latency_ms: float = 0.0
    attributes: Mapping[str, object] = field(default_factory=dict)
    operands: tuple[str, ...] = ()  # the ONNX inputs in their order, activations and initializers
    latency_unpacked_ms: float | None = None  # without pre-packing; None: the same
    packed_bytes: int = 0  # what pre-packing its weights adds to a function's peak
    # Kernel time at the thread counts profiled ({threads: ms}; empty: one thread only) and
    # Amdahl's serial fraction fitted to them (`profile.scaling`).
    latency_by_threads: Mapping[int, float] = field(default_factory=dict)
    serial_fraction: float = 1.0

    def latency_at(self, threads: int) -> float:
        """Kernel time with `threads` intra-op threads: measured, or Amdahl's from one thread
        (no gain at all where only one thread was profiled)."""
        return scaling.time_at({1: self.latency_ms, **self.latency_by_threads}, self.serial_fraction, threads)


@dataclass(frozen=True)
class SplitGroup:
    """Nodes [start, end): a resource-dominant Conv/Gemm/MatMul and the channel-wise ops after
    it; its output can be computed in parallel parts along `axis`, joined by a Concat."""

    start: int
    end: int
    axis: int
    channels: int  # size of the output along `axis`
    operator: str  # name of the dominant node


class Graph:
    def __init__(
        self,
        name: str,
        nodes: Sequence[Node],
        tensor_bytes: Mapping[str, int],
        weight_bytes: Mapping[str, int],
        inputs: Sequence[str],
        outputs: Sequence[str],
        ratios: Mapping[str, Mapping[str, float]] | None = None,
        weight_shapes: Mapping[str, tuple[int, ...]] | None = None,
        tensor_shapes: Mapping[str, tuple[int, ...]] | None = None,
        serial_fractions: Mapping[str, float] | None = None,
    ) -> None:
        self.name = name
        self.nodes = list(nodes)
        self.tensor_bytes = dict(tensor_bytes)
        self.weight_bytes = dict(weight_bytes)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.ratios = {k: dict(v) for k, v in (ratios or {}).items()}
        self.weight_shapes = dict(weight_shapes or {})
        self.tensor_shapes = dict(tensor_shapes or {})
        # Per dominant operator, the share of its time a split does not divide (measured).
        self.serial_fractions = dict(serial_fractions or {})
        n = len(self.nodes)
        self.producer: dict[str, int] = {t: GRAPH_INPUT for t in self.inputs}
        self.consumers: dict[str, list[int]] = {}
        for index, node in enumerate(self.nodes):
            for tensor in node.inputs:
                if tensor not in self.producer:
                    raise ValueError(f"node {node.name} reads {tensor!r}, which nothing before it produces")
                self.consumers.setdefault(tensor, []).append(index)
            for tensor in node.outputs:
                self.producer[tensor] = index
        # The last position that needs each tensor; graph outputs are needed at the end (n).
        self.last_use: dict[str, int] = {t: max(c) for t, c in self.consumers.items()}
        for tensor in self.outputs:
            self.last_use[tensor] = n

    def __len__(self) -> int:
        return len(self.nodes)

    # -- borders ----------------------------------------------------------------
    def crossing(self, position: int) -> list[str]:
        """Tensors produced before `position` and needed at or after it."""
        return [t for t, last in self.last_use.items() if self.producer[t] < position <= last]

    def cut_positions(self, max_tensors: int = 4) -> list[int]:
        """Positions where the graph may be cut: 0, n, and every position in between with at
        most `max_tensors` tensors crossing and no Pad separated from the node it fuses into."""
        n = len(self.nodes)
        crossing_count = [0] * (n + 1)
        for tensor, last in self.last_use.items():
            for position in range(self.producer[tensor] + 1, min(last, n) + 1):
                crossing_count[position] += 1
        blocked: set[int] = set()
        for index, node in enumerate(self.nodes):
            if node.op_type == "Pad":
                fused = [
                    c for t in node.outputs for c in self.consumers.get(t, []) if self.nodes[c].op_type in _FUSES_PAD
                ]
                blocked.update(range(index + 1, max(fused, default=index) + 1))
        inner = [p for p in range(1, n) if crossing_count[p] <= max_tensors and p not in blocked]
        return [0, *inner, n]

    # -- resource-dominant operators ---------------------------------------------
    def split_groups(self, threshold: float = 0.05) -> list[SplitGroup]:
        """Split candidates: splittable nodes holding at least `threshold` of the model's
        weights or time, each with every valid end of its channel-wise tail."""
        total_weights = max(sum(self.weight_bytes.values()), 1)
        total_time = max(sum(n.latency_ms for n in self.nodes), 1e-9)
        groups: list[SplitGroup] = []
        for index, node in enumerate(self.nodes):
            axis_channels = self._split_axis(node)
            if axis_channels is None:
                continue
            axis, channels = axis_channels
            weight = sum(self.weight_bytes[w] for w in node.weights)
            if weight < threshold * total_weights and node.latency_ms < threshold * total_time:
                continue
            for end in self._group_ends(index, axis, channels):
                groups.append(SplitGroup(index, end, axis, channels, node.name))
        return groups

    def _split_axis(self, node: Node) -> tuple[int, int] | None:
        operands = node.operands
        if len(node.outputs) != 1 or len(node.inputs) != 1 or len(operands) < 2 or operands[0] not in node.inputs:
            return None
        weight = self.weight_shapes.get(operands[1])
        return None if weight is None else split_axis(node.op_type, node.attributes, weight)

    def _group_ends(self, start: int, axis: int, channels: int) -> list[int]:
        """Ends e such that nodes [start, e) compute a channel-wise function of node start's output
        and only the last node's output leaves the group."""
        members = {t for t in self.nodes[start].outputs}
        ends = [start + 1]
        for index in range(start + 1, len(self.nodes)):
            node = self.nodes[index]
            if node.op_type not in CHANNELWISE or len(node.outputs) != 1:
                break
            if not node.inputs or any(t not in members for t in node.inputs):
                break
            rank = len(self.tensor_shapes.get(node.outputs[0], ()))
            if not all(self.broadcasts_per_channel(w, axis, channels, rank) for w in node.weights):
                break
            members.update(node.outputs)
            inner = [t for n in self.nodes[start:index] for t in n.outputs]
            if all(self.last_use.get(t, -1) <= index for t in inner):
                ends.append(index + 1)
        return ends

    def broadcasts_per_channel(self, weight: str, axis: int, channels: int, rank: int) -> bool:
        """True if constant `weight` is a scalar, or holds one value per channel along `axis`
        of a rank-`rank` tensor it is broadcast against (so it can be split with it)."""
        return constant_axis(self.weight_shapes.get(weight, ()), axis, channels, rank) is not None


def from_model(model: onnx.ModelProto, profile: Profile) -> Graph:
    """The planner's graph of `model`, with the costs `profile` measured for it."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    measured = {n.name: n for n in profile.nodes}
    specs = profile.tensor_specs
    nodes = []
    for node in graph.node:
        reads = [t for t in [*node.input, *outer_scope_reads(node)] if t]
        nodes.append(
            Node(
                name=node.name,
                op_type=node.op_type,
                inputs=tuple(dict.fromkeys(t for t in reads if t not in initializers)),
                outputs=tuple(t for t in node.output if t),
                weights=tuple(dict.fromkeys(t for t in reads if t in initializers)),
                latency_ms=measured[node.name].latency_ms if node.name in measured else 0.0,
                latency_unpacked_ms=measured[node.name].latency_unpacked_ms if node.name in measured else None,
                packed_bytes=measured[node.name].packed_bytes if node.name in measured else 0,
                latency_by_threads=dict(measured[node.name].latency_by_threads) if node.name in measured else {},
                serial_fraction=measured[node.name].serial_fraction if node.name in measured else 1.0,
                attributes={a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.type in _PLAIN},
                operands=tuple(node.input),
            )
        )
    return Graph(
        name=profile.model["name"],
        nodes=nodes,
        tensor_bytes={name: spec.nbytes for name, spec in specs.items()},
        weight_bytes={name: _tensor_bytes(t) for name, t in initializers.items()},
        inputs=[s.name for s in profile.inputs],
        outputs=[o.name for o in graph.output],
        ratios=profile.compression,
        weight_shapes={name: tuple(t.dims) for name, t in initializers.items()},
        tensor_shapes={name: spec.shape for name, spec in specs.items()},
        serial_fractions=profile.split_serial_fractions,
    )


_PLAIN = {onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.INTS, onnx.AttributeProto.STRING}


def outer_scope_reads(node: onnx.NodeProto) -> list[str]:
    """Tensors a node's subgraphs (If/Loop/Scan bodies) read from the enclosing graph."""
    reads: list[str] = []
    for attribute in node.attribute:
        for sub in _subgraphs(attribute):
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                local.update(inner.output)
            for inner in sub.node:
                reads += [t for t in [*inner.input, *outer_scope_reads(inner)] if t and t not in local]
    return reads


def _subgraphs(attribute: onnx.AttributeProto) -> Iterable[onnx.GraphProto]:
    if attribute.type == onnx.AttributeProto.GRAPH:
        yield attribute.g
    elif attribute.type == onnx.AttributeProto.GRAPHS:
        yield from attribute.graphs


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    elements: int = math.prod(tensor.dims)  # protobuf's containers are untyped here
    return elements * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
