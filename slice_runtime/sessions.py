"""onnxruntime sessions configured the one way every stage runs them.

Profiler, verifier, slice workers and the benchmark all open sessions here, so a
slice is measured and served with the same thread budget and optimisation level.
One intra-op thread is the default: one vCPU, as a function gets.
"""

from __future__ import annotations

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


def session_options(
    threads: int = DEFAULT_THREADS,
    optimization: str = DEFAULT_OPTIMIZATION,
    profile_prefix: str | None = None,
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
    # Idle intra-op threads spin by default; on shared cores that steals time from
    # the other slices' workers.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def open_session(
    model: str | Path | bytes,
    threads: int = DEFAULT_THREADS,
    optimization: str = DEFAULT_OPTIMIZATION,
    profile_prefix: str | None = None,
) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(
        source, session_options(threads, optimization, profile_prefix), providers=["CPUExecutionProvider"]
    )
