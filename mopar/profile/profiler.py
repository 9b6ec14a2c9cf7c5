"""Per-node profile of a model: onnxruntime's own kernel timings, weights, outputs, FLOPs.

Node times come from onnxruntime's own profiling trace, mapped back onto the original
graph (`trace`), so later stages can cut around any cost.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from mopar.errors import UsageError
from mopar.model.modelfile import ModelFile
from mopar.profile import prepacking, scaling, shapes, splitcost, trace
from mopar.profile.compressibility import measure_ratios
from mopar.profile.flops import node_flops
from slice_runtime.footprint import measure_peak_rss
from slice_runtime.sessions import open_session
from slice_runtime.tensors import TensorSpec, random_inputs

FORMAT = "mopar.profile/v1"
Progress = Callable[[str, int, int], None]  # (phase, done, total), see console.progress


@dataclass
class NodeProfile:
    name: str
    op_type: str
    latency_ms: float
    weight_bytes: int
    output_bytes: int
    flops: int | None
    outputs: list[TensorSpec] = field(default_factory=list)
    # Without pre-packing (`prepacking`): its kernel time (None: the same), and what its packed
    # weights add to a fresh process's peak.
    latency_unpacked_ms: float | None = None
    packed_bytes: int = 0
    # {intra-op threads: kernel ms} as measured (`latency_ms` is the one-thread time; empty
    # means {1: latency_ms}) and Amdahl's serial fraction fitted to it (`scaling`).
    latency_by_threads: dict[int, float] = field(default_factory=dict)
    serial_fraction: float = 1.0

    def latency_at(self, threads: int) -> float:
        """Kernel time with `threads` intra-op threads: measured, or Amdahl's beyond."""
        return scaling.time_at(self.latency_by_threads or {1: self.latency_ms}, self.serial_fraction, threads)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outputs"] = [o.to_json() for o in self.outputs]
        data["latency_by_threads"] = {str(n): ms for n, ms in self.latency_by_threads.items()}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeProfile:
        return cls(
            name=data["name"],
            op_type=data["op_type"],
            latency_ms=float(data["latency_ms"]),
            weight_bytes=int(data["weight_bytes"]),
            output_bytes=int(data["output_bytes"]),
            flops=None if data.get("flops") is None else int(data["flops"]),
            outputs=[TensorSpec.from_json(o) for o in data.get("outputs", [])],
            latency_unpacked_ms=None if data.get("latency_unpacked_ms") is None else float(data["latency_unpacked_ms"]),
            packed_bytes=int(data.get("packed_bytes", 0)),
            latency_by_threads={int(n): float(ms) for n, ms in data.get("latency_by_threads", {}).items()}
            or {1: float(data["latency_ms"])},
            serial_fraction=float(data.get("serial_fraction", 1.0)),
        )


@dataclass
class Profile:
    model: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: list[NodeProfile]
    totals: dict[str, Any]
    # {tensor: {codec setting: compression ratio}}, measured on the profiling run's activations
    compression: dict[str, dict[str, float]] = field(default_factory=dict)
    # {operator: serial fraction}: the share of its time a split does not divide (`splitcost`)
    split_serial_fractions: dict[str, float] = field(default_factory=dict)
    # A model with a symbolic batch: {"size": the batch profiled, "inputs", "outputs" (the
    # model's), "axes": {tensor: [its batch dimensions]}} (`shapes.batch_axes`); empty for a
    # fixed batch.
    batch: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "machine": self.machine,
            "settings": self.settings,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "nodes": [n.to_json() for n in self.nodes],
            "totals": self.totals,
            "compression": self.compression,
            "split_serial_fractions": self.split_serial_fractions,
            "batch": self.batch,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        if data.get("format") != FORMAT:
            raise UsageError(f"not a mopar profile (format {data.get('format')!r}, expected {FORMAT!r})")
        return cls(
            model=dict(data["model"]),
            machine=dict(data["machine"]),
            settings=dict(data["settings"]),
            inputs=[TensorSpec.from_json(s) for s in data["inputs"]],
            outputs=[TensorSpec.from_json(s) for s in data["outputs"]],
            nodes=[NodeProfile.from_json(n) for n in data["nodes"]],
            totals=dict(data["totals"]),
            compression={k: dict(v) for k, v in data.get("compression", {}).items()},
            split_serial_fractions={k: float(v) for k, v in data.get("split_serial_fractions", {}).items()},
            batch=dict(data.get("batch") or {}),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise UsageError(f"{path}: not a mopar profile ({error})") from None

    @property
    def tensor_specs(self) -> dict[str, TensorSpec]:
        specs = {s.name: s for s in self.inputs}
        for node in self.nodes:
            specs.update((o.name, o) for o in node.outputs)
        return specs

    @property
    def thread_counts(self) -> list[int]:
        """The intra-op thread counts profiled ([1] for a profile from before thread scaling)."""
        return [int(n) for n in self.machine.get("thread_counts", [1])]

    def whole_latency_ms(self, threads: int) -> float:
        """The whole model's wall time at `threads`: measured, or the measured time at the
        nearest count below, scaled as the nodes' fits scale from there."""
        measured = {int(n): float(ms) for n, ms in self.totals.get("latency_by_threads_ms", {}).items()}
        measured = measured or {1: float(self.totals["latency_ms"])}
        if threads in measured:
            return measured[threads]
        base = max((n for n in measured if n <= threads), default=min(measured))
        at_base = sum(node.latency_at(base) for node in self.nodes)
        if at_base <= 0.0:
            return measured[base]
        return measured[base] * sum(node.latency_at(threads) for node in self.nodes) / at_base


def profile_model(
    model: ModelFile,
    runs: int = 10,
    warmup: int = 2,
    threads: int = 1,
    optimization: str = "all",
    measure_memory: bool = True,
    measure_compression: bool = True,
    measure_splits: bool = True,
    progress: Progress | None = None,
    max_threads: int = 1,
) -> Profile:
    """Profile `model`: `warmup` unrecorded runs, then medians over `runs` runs.

    Node times and the whole model's wall time are measured at each intra-op thread count
    of `scaling.thread_counts(max_threads)`; memory, pre-packing and splits at `threads`."""
    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be at least 1 (got {runs}) and --warmup at least 0 (got {warmup})")
    if max_threads < 1:
        raise UsageError(f"--max-threads must be at least 1 (got {max_threads})")
    counts = scaling.thread_counts(max_threads)
    report = progress or (lambda phase, done, total: None)
    feeds = random_inputs(model.inputs, seed=0, ranges=model.input_ranges)
    serialized = model.serialized()
    graph = model.proto.graph

    report("shapes", 0, 1)
    specs = shapes.tensor_specs(model.proto, feeds)
    batch = shapes.batch_facts(model, specs)
    report("shapes", 1, 1)
    compression = {}
    if measure_compression:
        compression = measure_ratios(model.proto, feeds, specs, lambda done, total: report("codecs", done, total))

    with tempfile.TemporaryDirectory(prefix="mopar-profile-") as tmp:
        events_at: dict[int, list[dict[str, Any]]] = {}
        wall_at: dict[int, list[float]] = {}
        for step, count in enumerate(counts):
            prefix = os.path.join(tmp, f"trace-{count}")
            events_at[count] = _trace_runs(
                open_session(serialized, count, optimization, profile_prefix=prefix),
                feeds,
                warmup,
                runs,
                step,
                len(counts),
                report,
            )
            wall_at[count] = _time_runs(
                open_session(serialized, count, optimization), feeds, warmup, runs, step, len(counts), report
            )
        events, wall = events_at[1], wall_at[1]

        peak = baseline = None
        if measure_memory:
            report("memory", 0, 2)
            model_path = Path(tmp) / "model.onnx"
            model_path.write_bytes(serialized)
            peak = measure_peak_rss(model_path, threads, optimization)
            report("memory", 1, 2)
            baseline = measure_peak_rss(None, threads, optimization)
            report("memory", 2, 2)
        packing = prepacking.measure(
            model.proto, serialized, feeds, threads, optimization, warmup, runs, peak, Path(tmp), report
        )

    traced = {count: trace.per_node_ms(events_at[count], graph, warmup) for count in counts}
    per_node_at = {count: per_node for count, (per_node, _) in traced.items()}
    per_node, fallback_ms = traced[1]
    weight_bytes = _weight_bytes_by_node(graph)
    shape_of = {name: spec.shape for name, spec in specs.items()}
    shape_of.update({t.name: tuple(t.dims) for t in graph.initializer})
    nodes = []
    for node in graph.node:
        outputs = [specs[o] for o in node.output if o in specs]
        by_threads = {count: round(per_node_at[count].get(node.name, 0.0), 4) for count in counts}
        nodes.append(
            NodeProfile(
                name=node.name,
                op_type=node.op_type,
                latency_ms=round(per_node.get(node.name, 0.0), 4),
                weight_bytes=weight_bytes.get(node.name, 0),
                output_bytes=sum(o.nbytes for o in outputs),
                flops=node_flops(node, shape_of),
                outputs=outputs,
                latency_unpacked_ms=(
                    round(packing.unpacked_ms[node.name], 4) if node.name in packing.unpacked_ms else None
                ),
                packed_bytes=packing.packed_bytes.get(node.name, 0),
                latency_by_threads=by_threads,
                serial_fraction=round(scaling.serial_fraction(by_threads), 4),
            )
        )
    fractions: dict[str, float] = {}
    if measure_splits:
        names = splitcost.candidates(model.proto, {n.name: n.latency_ms for n in nodes})
        fractions = splitcost.serial_fractions(
            model.proto, specs, names, threads, optimization, progress=lambda done, total: report("splits", done, total)
        )
    known_flops = [n.flops for n in nodes if n.flops is not None]
    totals = {
        "latency_ms": round(statistics.median(wall), 4),
        "latency_by_threads_ms": {str(count): round(statistics.median(wall_at[count]), 4) for count in counts},
        "profiled_run_ms": round(statistics.median(ms for _, ms in trace.run_times(events)[warmup:]), 4),
        "node_latency_ms": round(sum(n.latency_ms for n in nodes), 4),
        "fallback_attributed_ms": round(fallback_ms, 4),
        "weight_bytes": model.weight_bytes,
        "flops": sum(known_flops),
        "peak_memory_bytes": peak,
        "peak_memory_unpacked_bytes": packing.peak_unpacked_bytes,
        "runtime_baseline_bytes": baseline,
    }
    return Profile(
        model={"name": model.name, "sha256": model.sha256, "file": str(model.path)},
        machine={**machine_facts(threads, optimization), "thread_counts": counts},
        settings={"runs": runs, "warmup": warmup, "input_shapes": {k: list(v) for k, v in model.input_shapes.items()}},
        inputs=model.inputs,
        outputs=[specs.get(o.name, o) for o in model.outputs],
        nodes=nodes,
        totals=totals,
        compression=compression,
        split_serial_fractions=fractions,
        batch=batch,
    )


def _trace_runs(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    warmup: int,
    runs: int,
    step: int,
    steps: int,
    report: Progress,
) -> list[dict[str, Any]]:
    """onnxruntime's trace of `warmup` + `runs` runs of a session opened with profiling on;
    the progress bar counts `steps` such sessions, this one the `step`th."""
    for i in range(warmup + runs):
        session.run(None, dict(feeds))
        report("profile", step * (warmup + runs) + i + 1, steps * (warmup + runs))
    events: list[dict[str, Any]] = json.loads(Path(session.end_profiling()).read_text())
    return events


def _time_runs(
    session: ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    warmup: int,
    runs: int,
    step: int,
    steps: int,
    report: Progress,
) -> list[float]:
    for _ in range(warmup):
        session.run(None, dict(feeds))
    wall = []
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, dict(feeds))
        wall.append((time.perf_counter() - start) * 1000.0)
        report("timing", step * runs + i + 1, steps * runs)
    return wall


def _weight_bytes_by_node(graph: onnx.GraphProto) -> dict[str, int]:
    """Initializer bytes per node; a weight shared by several nodes counts at its first
    consumer, so the per-node figures add up to the model's total."""
    sizes = {t.name: _initializer_bytes(t) for t in graph.initializer}
    counted: set[str] = set()
    result: dict[str, int] = {}
    for node in graph.node:
        mine = [name for name in node.input if name in sizes and name not in counted]
        counted.update(mine)
        result[node.name] = sum(sizes[name] for name in mine)
    return result


def _initializer_bytes(tensor: onnx.TensorProto) -> int:
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def machine_facts(threads: int, optimization: str) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "threads": threads,
        "optimization": optimization,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
