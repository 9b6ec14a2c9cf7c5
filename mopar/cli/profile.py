"""`mopar profile MODEL`: per-node latency, memory and FLOPs; table, JSON and plot."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.table import Table

from mopar.cli.console import err, mb, out, progress
from mopar.model.modelfile import load_model, parse_input_shape
from mopar.profile.profiler import Profile, profile_model


def run(args: argparse.Namespace) -> int:
    shapes = dict(parse_input_shape(text) for text in args.input_shape)
    model = load_model(args.model, shapes)
    with progress(f"profiling {model.name}") as report:
        profile = profile_model(
            model,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            optimization=args.optimization,
            measure_memory=not args.no_memory,
            progress=report,
            max_threads=max_threads(args.max_threads),
        )
    out.print(profile_table(profile, args.top))
    out.print(profile_summary(profile))
    if args.output:
        profile.save(args.output)
        err.print(f"wrote {args.output}")
    if args.plot:
        from mopar.profile.plotting import plot_profile

        err.print(f"wrote {plot_profile(profile, Path(args.plot))}")
    return 0


def max_threads(requested: int | None) -> int:
    """The most intra-op threads to profile at: `requested`, at most this machine's cores
    (more threads than cores would measure contention, not scaling)."""
    cores = os.cpu_count() or 1
    if requested is None:
        return cores
    if requested > cores:
        err.print(f"--max-threads {requested} is more than this machine's {cores} cores: profiling up to {cores}")
        return cores
    return requested


def profile_table(profile: Profile, top: int = 20) -> Table:
    """The `top` slowest nodes (all when 0), shown in execution order."""
    total = max(profile.totals["node_latency_ms"], 1e-9)
    indexed = list(enumerate(profile.nodes))
    if top > 0:
        indexed = sorted(sorted(indexed, key=lambda item: -item[1].latency_ms)[:top])
    shown = "all" if top <= 0 or top >= len(profile.nodes) else f"the {top} slowest"
    table = Table(title=f"{profile.model['name']}: {shown} of {len(profile.nodes)} nodes, in execution order")
    most = profile.thread_counts[-1]
    scaled = (f"x{most} thr",) if most > 1 else ()  # speed-up from one thread to the most profiled
    for column in ("#", "node", "op", "ms", "time %", *scaled, "weights MB", "output MB", "GFLOP"):
        table.add_column(column, justify="left" if column in ("node", "op") else "right")
    for index, node in indexed:
        speedup = (_speedup(node.latency_ms, node.latency_at(most)),) if scaled else ()
        table.add_row(
            str(index),
            node.name,
            node.op_type,
            f"{node.latency_ms:.3f}",
            f"{100 * node.latency_ms / total:.1f}",
            *speedup,
            mb(node.weight_bytes),
            f"{node.output_bytes / 2**20:.2f}",
            "-" if node.flops is None else f"{node.flops / 1e9:.3f}",
        )
    return table


def profile_summary(profile: Profile) -> str:
    t = profile.totals
    coverage = 100 * t["node_latency_ms"] / max(t["profiled_run_ms"], 1e-9)
    lines = [
        f"model {profile.model['name']}  sha256 {profile.model['sha256'][:12]}  "
        f"threads {profile.machine['threads']}, optimisation {profile.machine['optimization']}, "
        f"onnxruntime {profile.machine['onnxruntime']}",
        f"whole-model latency {t['latency_ms']:.2f} ms (median of {profile.settings['runs']}); "
        f"node kernels sum to {t['node_latency_ms']:.2f} ms ({coverage:.0f} % of the profiled runs)",
        f"weights {mb(t['weight_bytes'])} MB; {t['flops'] / 1e9:.2f} GFLOP; "
        f"peak RSS {mb(t['peak_memory_bytes'])} MB (runtime baseline {mb(t['runtime_baseline_bytes'])} MB)",
    ]
    counts = profile.thread_counts
    if len(counts) > 1:
        at = [f"{n} thr {profile.whole_latency_ms(n):.2f} ms" for n in counts]
        nodes_at = {n: sum(node.latency_at(n) for node in profile.nodes) for n in (1, counts[-1])}
        lines.append(
            f"by intra-op threads: {', '.join(at)}; x{counts[-1]} thr speed-up "
            f"{_speedup(profile.whole_latency_ms(1), profile.whole_latency_ms(counts[-1]))} whole, "
            f"{_speedup(nodes_at[1], nodes_at[counts[-1]])} node kernels"
        )
    return "\n".join(lines)


def _speedup(one: float, many: float) -> str:
    return f"{one / many:.2f}" if many > 1e-9 else "-"
