"""How well each activation compresses with each codec setting, from a real run.

Ratios depend on the data (post-ReLU tensors are half zeros, pre-activation ones are
not), so they are measured on the activations of a run on the profiling inputs: the
model runs with its intermediate tensors exposed as outputs (a few at a time, so that
memory stays bounded), and a sample of each tensor is framed with every candidate setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx

from slice_runtime import codec
from slice_runtime.sessions import open_session
from slice_runtime.tensors import TensorSpec

SAMPLE_BYTES = 256 * 1024  # a contiguous sample of each tensor (a few channels)
BATCH_BYTES = 256 * 2**20  # intermediate tensors exposed per run


def measure_ratios(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    specs: Mapping[str, TensorSpec],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """{tensor: {setting name: raw bytes / framed bytes}} for every node output worth compressing."""
    names = [
        out
        for node in model.graph.node
        for out in node.output
        if out in specs and specs[out].dtype != "object" and specs[out].nbytes >= codec.DEFAULT_THRESHOLD_BYTES
    ]
    ratios: dict[str, dict[str, float]] = {}
    for batch in _batches(names, specs):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in batch)
        arrays = open_session(probe.SerializeToString(), optimization="disable").run(batch, dict(feeds))
        for name, array in zip(batch, arrays):
            ratios[name] = tensor_ratios(array)
        if progress:
            progress(len(ratios), len(names))
    return ratios


def tensor_ratios(array: np.ndarray) -> dict[str, float]:
    flat = np.ascontiguousarray(array).reshape(-1)
    sample = flat[: max(SAMPLE_BYTES // max(flat.itemsize, 1), 1)]
    raw = sample.nbytes
    return {s.name: round(raw / len(codec.encode(sample, s, threshold=0)), 4) for s in codec.CANDIDATES}


def _batches(names: Sequence[str], specs: Mapping[str, TensorSpec]) -> list[list[str]]:
    batches: list[list[str]] = [[]]
    size = 0
    for name in names:
        if batches[-1] and size + specs[name].nbytes > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(name)
        size += specs[name].nbytes
    return [b for b in batches if b]
