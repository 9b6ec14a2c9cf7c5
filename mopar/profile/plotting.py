"""Pictures of a profile: where in the model the time and the memory are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mopar.profile.profiler import Profile


def plot_profile(profile: Profile, path: str | Path) -> Path:
    """Per-node latency (coloured by operator), its speed-up with the most threads profiled,
    and per-node weights and activations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = profile.nodes
    x = list(range(len(nodes)))
    by_op: dict[str, float] = {}
    for node in nodes:
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + node.latency_ms
    top_ops = sorted(by_op, key=by_op.__getitem__, reverse=True)[:7]  # ties keep first-seen order
    palette = plt.get_cmap("tab10")
    colour = {op: palette(i) for i, op in enumerate(top_ops)}
    other = (0.6, 0.6, 0.6, 1.0)

    most = profile.thread_counts[-1]
    if most > 1:
        fig, (top, scaling, bottom) = plt.subplots(3, 1, sharex=True, figsize=(13, 9), height_ratios=[3, 2, 2])
        _plot_speedup(scaling, profile, most, [colour.get(n.op_type, other) for n in nodes])
    else:
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(13, 6.5), height_ratios=[3, 2])
    top.bar(x, [n.latency_ms for n in nodes], width=1.0, color=[colour.get(n.op_type, other) for n in nodes])
    top.set_ylabel("kernel time (ms, median)")
    cumulative, total = [], 0.0
    for node in nodes:
        total += node.latency_ms
        cumulative.append(100 * total / max(profile.totals["node_latency_ms"], 1e-9))
    share = top.twinx()
    share.plot(x, cumulative, color="black", linewidth=1)
    share.set_ylabel("cumulative time (%)")
    share.set_ylim(0, 105)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[op]) for op in top_ops]
    top.legend(handles, top_ops, loc="upper left", fontsize=8, ncol=4)
    totals = profile.totals
    peak = totals.get("peak_memory_bytes")
    threads = profile.machine["threads"]
    top.set_title(
        f"{profile.model['name']}: {totals['latency_ms']:.1f} ms per run, "
        f"{totals['weight_bytes'] / 2**20:.1f} MB weights"
        + (f", peak RSS {peak / 2**20:.0f} MB" if peak else "")
        + f" ({threads} thread{'s' if threads > 1 else ''}, optimisation {profile.machine['optimization']})"
    )

    bottom.bar(x, [n.weight_bytes / 2**20 for n in nodes], width=1.0, color="tab:blue", label="weights")
    bottom.plot(x, [n.output_bytes / 2**20 for n in nodes], color="tab:red", linewidth=1, label="output activation")
    bottom.set_ylabel("MB")
    bottom.set_xlabel("node, in execution (topological) order")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_speedup(axes: Any, profile: Profile, threads: int, colours: list[Any]) -> None:
    """Each node's speed-up from one thread to `threads`, against none (1) and the ideal; no bar
    for a node without kernel time of its own (fused into another)."""
    speedups = [
        n.latency_ms / n.latency_at(threads) if min(n.latency_ms, n.latency_at(threads)) > 1e-9 else 0.0
        for n in profile.nodes
    ]
    axes.bar(range(len(speedups)), speedups, width=1.0, color=colours)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.axhline(threads, color="black", linewidth=0.8, linestyle="--", label=f"ideal (x{threads})")
    whole = profile.whole_latency_ms(1) / max(profile.whole_latency_ms(threads), 1e-9)
    axes.set_ylabel(f"speed-up at {threads} threads")
    axes.set_title(f"one thread -> {threads} intra-op threads: whole model x{whole:.2f}", fontsize=9)
    axes.legend(loc="upper left", fontsize=8)
