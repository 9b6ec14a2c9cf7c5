"""What pre-packing buys and costs, per node, measured.

When a session loads, onnxruntime re-lays the constant weights of MatMul, Gemm and the
recurrent and attention kernels out for its kernels ("pre-packing"). Serving maps those
packed copies from the optimised file (`sessions.open_serving_session`), so a packed slice
runs as fast as onnxruntime's defaults. But loading touches both copies, and a batch-1 Gemm
over large weights gets no faster: VGG-16's classifier peaks 194 MB higher packed, for no
time. So the planner chooses per slice, from what this module measures: each node's kernel
time without pre-packing (a second profiled session), and the fresh-process peak of the
whole model without it; the difference from the packed peak is attributed to the nodes
whose weights can be packed, in proportion to those weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mopar.profile import trace
from slice_runtime.footprint import measure_peak_rss
from slice_runtime.sessions import open_session

# Kernels whose constant weights onnxruntime's CPU provider packs at load.
PACKED_OPS = frozenset({"MatMul", "Gemm", "LSTM", "GRU", "Attention"})


@dataclass(frozen=True)
class Prepacking:
    unpacked_ms: dict[str, float]  # node -> kernel ms without pre-packing
    packed_bytes: dict[str, int]  # node -> what its packed copy adds to the fresh-process peak
    peak_unpacked_bytes: int | None


def packable_weight_bytes(graph: onnx.GraphProto) -> dict[str, int]:
    """Bytes of the constant weights each packable node reads (beyond its first input)."""
    sizes = {t.name: int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in graph.initializer}  # fmt: skip
    return {
        node.name: total
        for node in graph.node
        if node.op_type in PACKED_OPS and (total := sum(sizes.get(name, 0) for name in node.input[1:]))
    }


def measure(
    model: onnx.ModelProto,
    serialized: bytes,
    feeds: Mapping[str, np.ndarray],
    threads: int,
    optimization: str,
    warmup: int,
    runs: int,
    peak_packed_bytes: int | None,
    work: Path,
    report: Callable[[str, int, int], None],
) -> Prepacking:
    """Kernel times and the peak without pre-packing; a model with nothing to pack needs neither."""
    packable = packable_weight_bytes(model.graph)
    if not packable:
        return Prepacking({}, {}, peak_packed_bytes)
    session = open_session(serialized, threads, optimization, os.path.join(work, "unpacked"), prepack=False)
    for i in range(warmup + runs):
        session.run(None, dict(feeds))
        report("unpacked", i + 1, warmup + runs)
    events = json.loads(Path(session.end_profiling()).read_text())
    del session
    unpacked, _ = trace.per_node_ms(events, model.graph, warmup)
    if peak_packed_bytes is None:
        return Prepacking(unpacked, {}, None)
    model_path = work / "model.onnx"
    if not model_path.exists():
        model_path.write_bytes(serialized)
    peak_unpacked = measure_peak_rss(model_path, threads, optimization, prepack=False)
    extra = max(0, peak_packed_bytes - peak_unpacked)
    total = sum(packable.values())
    return Prepacking(unpacked, {name: extra * size // total for name, size in packable.items()}, peak_unpacked)
