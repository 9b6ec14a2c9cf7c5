"""The memory a slice's function needs (pure): what the planner sizes functions by.

need = runtime baseline + weights + s x (inputs + a x peak live activations)

The baseline is measured once: a fresh process with a worker's imports and an empty
onnxruntime session (`slice_runtime.footprint`); every slice pays it. Weights are held
once when the graph is optimised ahead of time (`open_serving_session`). Inputs stay
alive for the whole run (they are the request's tensors); activations are the largest
set of the slice's own tensors alive while one of its nodes runs. The allocated memory
is `need` rounded up to the platform's step (`pricing.Pricing.allocate_mb`).

onnxruntime holds more than the live tensors: its arena grows in power-of-two chunks
and re-laid-out (NCHWc) buffers are padded, so `a` (the activation factor) is measured
per model: the profile's fresh-process peak of the whole model, less baseline, weights
and inputs, over the model's computed activation peak (`calibrated`). Slices of one
model share its kinds of layers, and so its overhead.

A model with a symbolic batch is profiled at one batch and sized for the largest a request may
carry: inputs and activations grow with the batch, weights and baseline do not, so the batch
scale `s` is the maximum batch over the profiled one (1 for a fixed batch).
`tests/plan/test_memory_model.py` checks this against the peak RSS of real slice processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mopar.plan.segments import SegmentStats

MB = 2**20


ACTIVATION_FACTOR_BOUNDS = (1.0, 4.0)


@dataclass(frozen=True)
class MemoryModel:
    baseline_bytes: int
    activation_factor: float = 1.0
    batch_scale: float = 1.0  # maximum batch / profiled batch

    def need_bytes(self, stats: SegmentStats, parts: int = 1, prepack: bool = True) -> int:
        """Bytes one function of the slice needs; `parts` > 1 for one of k parallel sub-slices,
        which holds 1/k of the weights and of the activations but the whole input. Pre-packed,
        loading also touches the packed copies of its weights (`profile.prepacking`)."""
        return int(
            self.baseline_bytes
            + (stats.weight_bytes + (stats.packed_bytes if prepack else 0)) / parts
            + self.batch_scale * (stats.input_bytes + self.activation_factor * stats.activation_peak_bytes / parts)
        )


def calibrated(baseline_bytes: int, measured_peak_bytes: int | None, whole: SegmentStats) -> MemoryModel:
    """The memory model whose activation factor reproduces the whole model's measured peak
    (without pre-packing, whose cost is the segments' `packed_bytes`)."""
    if not measured_peak_bytes or whole.activation_peak_bytes <= 0:
        return MemoryModel(baseline_bytes)
    rest = measured_peak_bytes - baseline_bytes - whole.weight_bytes - whole.input_bytes
    low, high = ACTIVATION_FACTOR_BOUNDS
    return MemoryModel(baseline_bytes, round(min(high, max(low, rest / whole.activation_peak_bytes)), 3))
