"""`mopar verify`: the partitioned model's outputs against the whole model's, on seeded inputs.

Both run in onnxruntime at the same optimisation level (optimisers may legitimately
change results, e.g. by fusing a zero Pad into a MaxPool; the planner never separates
such pairs, so at equal levels the slices compute what the whole model computes).

The rule, per float output: max |partitioned - whole| <= rtol * max |whole| + atol. The
slices compute the same operations on the same weights, but onnxruntime may group and order
their sums differently (other fusions at a cut, other kernels for a sub-slice's smaller
GEMM), and that rounding is relative to the magnitudes summed, not to each element: an
element near zero carries the same absolute noise as the largest one. An elementwise
rtol therefore fails correct partitions of deep models (a PyTorch ResNet-50 in 16
sub-slices: 2.4e-4 apart, as far as the whole model is from itself at another
optimisation level). Scaled by the output's largest magnitude, float32's rtol 1e-4 sits
above that noise (the zoo's ResNet-50: 3e-7 of its largest logit between levels `all` and
`disable`) and far below what a slicing error does: a wrong tensor wired or a weight off
by 0.1 % moves outputs by a fraction of their magnitude, orders of magnitude more (the tests
plant both). Integers and booleans must match exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from slice_runtime import manifest as manifests
from slice_runtime.sessions import open_session
from slice_runtime.tensors import random_inputs

# (rtol, atol) per float dtype: rtol is relative to the output's largest magnitude.
TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-7, 1e-9), "float16": (1e-2, 1e-3)}


def tolerance(dtype: str, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    """(rtol, atol) for outputs of `dtype`, either replaced where given (--rtol, --atol)."""
    default_rtol, default_atol = TOLERANCE.get(dtype, TOLERANCE["float32"])
    return (default_rtol if rtol is None else rtol, default_atol if atol is None else atol)


@dataclass(frozen=True)
class Difference:
    output: str
    max_abs: float
    max_rel: float  # max_abs relative to the output's largest magnitude
    within: bool
    allowed: float = 0.0  # the largest max_abs the rule accepts


@dataclass(frozen=True)
class Report:
    trials: int
    differences: list[Difference]

    @property
    def ok(self) -> bool:
        return all(d.within for d in self.differences)


def verify(
    directory: str | Path,
    model: ModelFile,
    trials: int = 3,
    seed: int = 0,
    optimization: str = "all",
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> Report:
    manifest = manifests.load(directory)
    if manifest.sha256 != model.sha256:
        raise UsageError(
            f"{directory} holds slices of model sha256 {manifest.sha256[:12]}, not of {model.path} "
            f"(sha256 {model.sha256[:12]})"
        )
    manifest.verify_files()
    whole = open_session(model.serialized(), threads, optimization)
    sessions = {e.id: open_session(manifest.path_of(e), threads, optimization) for e in manifest.slices}

    def run_slice(entry: manifests.SliceEntry, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in entry.outputs]
        return dict(zip(names, sessions[entry.id].run(names, inputs)))

    worst: dict[str, Difference] = {}
    for trial in range(trials):
        feeds = random_inputs(model.inputs, seed=seed + trial, ranges=model.input_ranges)
        expected = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, feeds)))
        got = manifests.run_in_process(manifest, feeds, run_slice)
        for name, reference in expected.items():
            now, before = compare(name, reference, got[name], rtol, atol), worst.get(name)
            worst[name] = (
                now
                if before is None
                else Difference(
                    name,
                    max(before.max_abs, now.max_abs),
                    max(before.max_rel, now.max_rel),
                    before.within and now.within,
                    min(before.allowed, now.allowed),
                )
            )
        if progress:
            progress(trial + 1, trials)
    return Report(trials, list(worst.values()))


def compare(
    name: str, expected: np.ndarray, got: np.ndarray, rtol: float | None = None, atol: float | None = None
) -> Difference:
    """`got` against `expected` by the rule above; NaN only where `expected` has NaN."""
    if expected.shape != got.shape or expected.dtype != got.dtype:
        return Difference(name, float("inf"), float("inf"), False)
    if expected.dtype.kind != "f":
        equal = bool(np.array_equal(expected, got))
        return Difference(name, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), equal)
    rtol, atol = tolerance(str(expected.dtype), rtol, atol)
    want, have = expected.astype(np.float64), got.astype(np.float64)
    nan = np.isnan(want)
    if not np.array_equal(nan, np.isnan(have)):
        return Difference(name, float("inf"), float("inf"), False)
    want, have = want[~nan], have[~nan]
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: equal
        delta = np.where(want == have, 0.0, np.abs(want - have))
    if delta.size == 0:
        return Difference(name, 0.0, 0.0, True, atol)
    finite = np.abs(want[np.isfinite(want)])
    max_abs, scale = float(delta.max()), float(finite.max()) if finite.size else 0.0
    allowed = rtol * scale + atol
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Difference(name, max_abs, max_rel, bool(max_abs <= allowed), allowed)
