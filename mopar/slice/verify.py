"""`mopar verify`: the partitioned model's outputs against the whole model's, on seeded inputs.

Both run in onnxruntime at the same optimisation level (optimisers may legitimately
change results, e.g. by fusing a zero Pad into a MaxPool; the planner never separates
such pairs, so at equal levels the slices compute what the whole model computes).
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

# (rtol, atol) per dtype kind; integers and booleans must match exactly.
TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-7, 1e-9), "float16": (1e-2, 1e-3)}


@dataclass(frozen=True)
class Difference:
    output: str
    max_abs: float
    max_rel: float
    within: bool


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
            now, before = compare(name, reference, got[name]), worst.get(name)
            worst[name] = (
                now
                if before is None
                else Difference(
                    name,
                    max(before.max_abs, now.max_abs),
                    max(before.max_rel, now.max_rel),
                    before.within and now.within,
                )
            )
        if progress:
            progress(trial + 1, trials)
    return Report(trials, list(worst.values()))


def compare(name: str, expected: np.ndarray, got: np.ndarray) -> Difference:
    if expected.shape != got.shape or expected.dtype != got.dtype:
        return Difference(name, float("inf"), float("inf"), False)
    if expected.dtype.kind not in "fc":
        equal = bool(np.array_equal(expected, got))
        return Difference(name, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), equal)
    rtol, atol = TOLERANCE.get(str(expected.dtype), (1e-4, 1e-5))
    delta = np.abs(expected.astype(np.float64) - got.astype(np.float64))
    scale = np.abs(expected.astype(np.float64))
    max_rel = float(np.max(delta / np.maximum(scale, atol))) if delta.size else 0.0
    within = bool(np.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True))
    return Difference(name, float(delta.max()) if delta.size else 0.0, max_rel, within)
