"""Pictures of a profile: where in the model the time and the memory are."""

from __future__ import annotations

from pathlib import Path

from mopar.profile.profiler import Profile


def plot_profile(profile: Profile, path: str | Path) -> Path:
    """Per-node latency (coloured by operator) over per-node weights and activations."""
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
