"""Resource use of every candidate slice [a, b) of a graph, in one sweep per start (pure).

For a fixed start a, adding node k to the slice [a, k) updates, in constant time per
tensor: the compute time, the weights it holds (a weight shared by two nodes counts
once per slice that holds it), the inputs it reads from earlier slices, the tensors it
produced that are still needed (its outputs so far, and its live activations), and the
peak of those activations while a node runs (its inputs and outputs both alive).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the graph is only read here; its module loads onnx
    from mopar.plan.graph import Graph


@dataclass(frozen=True)
class SegmentStats:
    start: int
    end: int
    compute_ms: float
    weight_bytes: int
    input_bytes: int
    output_bytes: int
    activation_peak_bytes: int  # produced tensors alive at once, at the worst node
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # sum over nodes of (own weights + live activations) x node time, in byte-milliseconds:
    # the memory the nodes actually touch over time (see `planner` for resource efficiency)
    touched_byte_ms: float
    compute_unpacked_ms: float = 0.0  # without pre-packing (`profile.prepacking`)
    packed_bytes: int = 0  # what pre-packing the segment's weights adds to its peak


def sweep(graph: Graph, start: int, ends: Sequence[int]) -> Iterator[SegmentStats]:
    """Stats of [start, end) for each `end` in `ends` (ascending, all > start)."""
    wanted = set(ends)
    last = max(ends)
    compute = compute_unpacked = 0.0
    packed = 0
    weights: set[str] = set()
    weight_bytes = 0
    inputs: dict[str, None] = {}
    input_bytes = 0
    live: dict[str, int] = {}  # produced here, still needed after the current node
    live_bytes = 0
    expiring: dict[int, list[str]] = {}  # node index -> live tensors it reads for the last time
    peak = 0
    touched = 0.0
    for k in range(start, last):
        node = graph.nodes[k]
        compute += node.latency_ms
        compute_unpacked += node.latency_ms if node.latency_unpacked_ms is None else node.latency_unpacked_ms
        packed += node.packed_bytes
        own_weights = 0
        for w in node.weights:
            own_weights += graph.weight_bytes[w]
            if w not in weights:
                weights.add(w)
                weight_bytes += graph.weight_bytes[w]
        for t in node.inputs:
            if graph.producer[t] < start and t not in inputs:
                inputs[t] = None
                input_bytes += graph.tensor_bytes.get(t, 0)
        for t in node.outputs:
            size = graph.tensor_bytes.get(t, 0)
            last_use = graph.last_use.get(t)
            if last_use is not None and last_use > k:
                live[t] = size
                live_bytes += size
                expiring.setdefault(last_use, []).append(t)
        # Alive while node k runs: everything still live (its inputs included) and its outputs.
        running = live_bytes + sum(graph.tensor_bytes.get(t, 0) for t in node.outputs if t not in live)
        peak = max(peak, running)
        touched += (own_weights + running) * node.latency_ms
        for t in expiring.pop(k, ()):
            live_bytes -= live.pop(t)
        end = k + 1
        if end in wanted:
            outputs = tuple(live)  # what is still live after node k is needed at or after `end`
            yield SegmentStats(
                start=start,
                end=end,
                compute_ms=compute,
                weight_bytes=weight_bytes,
                input_bytes=input_bytes,
                output_bytes=sum(live[t] for t in outputs),
                activation_peak_bytes=peak,
                inputs=tuple(inputs),
                outputs=outputs,
                touched_byte_ms=touched,
                compute_unpacked_ms=compute_unpacked,
                packed_bytes=packed,
            )
