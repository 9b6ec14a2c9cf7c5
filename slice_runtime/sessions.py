"""onnxruntime sessions configured the one way every stage runs them.

Profiler, verifier, slice workers and the benchmark all open sessions here, so a
slice is measured and served with the same thread budget and optimisation level.
One intra-op thread is the default; a slice's workers run with the threads its plan gave it
(the manifest's `threads`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
DEFAULT_OPTIMIZATION = "all"
DEFAULT_THREADS = 1


def spinning(threads: int) -> dict[str, str]:
    """Session config entries for how idle intra-op threads wait.

    Several threads: they spin while a run lasts (without it, waking them costs a multi-thread
    run a lot) and stop spinning once it ends (spinning between runs steals the cores of the
    other slices' workers). One thread has no pool to wake: no spinning at all."""
    if threads > 1:
        return {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}
    return {"session.intra_op.allow_spinning": "0"}


def session_options(
    threads: int = DEFAULT_THREADS,
    optimization: str = DEFAULT_OPTIMIZATION,
    profile_prefix: str | None = None,
    prepack: bool = True,
) -> ort.SessionOptions:
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in spinning(threads).items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 3
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def open_session(
    model: str | Path | bytes,
    threads: int = DEFAULT_THREADS,
    optimization: str = DEFAULT_OPTIMIZATION,
    profile_prefix: str | None = None,
    prepack: bool = True,
) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    options = session_options(threads, optimization, profile_prefix, prepack)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def open_serving_session(
    model: str | Path, threads: int = DEFAULT_THREADS, prepack: bool = True
) -> ort.InferenceSession:
    """A session for serving `model` at full optimisation, as fast as onnxruntime's defaults and
    holding its weights once.

    Optimised in-process (level `all`), onnxruntime keeps the original weights beside their
    re-laid-out and pre-packed copies, and loading peaks at about twice the weights (VGG-16
    at 1,048 MB). Here the graph is optimised ahead of time in a child process and written
    with its weights in an external file, and the pre-packed copies of MatMul and Gemm
    weights are written into that file too; the session then maps both from the file
    instead of copying them: the same kernels as the defaults (BERT-base 148 ms against
    153 ms), weights resident once (490 MB against 691 MB).

    `prepack=False` keeps the unpacked kernels: for a batch-1 Gemm over large weights (a
    classifier) packing buys no time and its load touches the weights twice (VGG-16's peak
    645 MB unpacked, 839 MB packed); the planner chooses per slice (`prepack` in the
    manifest). The optimised file is specific to this machine's CPU, so it is made here, at
    load time; it is unlinked once mapped (the mapping outlives the name).
    """
    with tempfile.TemporaryDirectory(prefix="mopar-optimised-") as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        command = [
            sys.executable, "-m", "slice_runtime.sessions", "optimise",
            str(model), str(optimised), str(threads), "prepack" if prepack else "plain",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"optimising {model} failed: {last}")
        options = session_options(threads, "disable", prepack=prepack)
        return ort.InferenceSession(str(optimised), options, providers=["CPUExecutionProvider"])


def _optimise(source: str, target: str, threads: int, prepack: bool) -> None:
    options = session_options(threads, "all")
    options.optimized_model_filepath = target
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", Path(target).name + ".data"
    )
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if prepack:
        options.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "optimise" and sys.argv[5] in ("prepack", "plain"):
        _optimise(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "prepack")
    else:
        sys.exit("usage: python -m slice_runtime.sessions optimise SOURCE TARGET THREADS prepack|plain")
