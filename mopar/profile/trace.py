"""onnxruntime's profiling trace, read back onto the original graph (pure).

The trace is Chrome-trace JSON: events with `cat == "Node"` whose name ends in
`_kernel_time` carry a kernel's time in microseconds (`dur`); events named `model_run`
delimit runs. Optimised graphs rename or fuse nodes, so every timing is mapped back to a
node of the original graph (by name, else by the tensor it writes, else to the node that
ran just before it), and later stages can cut around any cost.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

KERNEL_SUFFIX = "_kernel_time"
# What onnxruntime adds to the names of nodes it rewrites: a prefix on fused nodes
# ("fused classifier.fc1/Gemm"), a suffix on the tensor a re-laid-out node is named after.
_REWRITE_PREFIXES = ("fused ",)
_REWRITE_SUFFIXES = ("_nchwc",)


def per_node_ms(
    events: Iterable[Mapping[str, Any]], graph: onnx.GraphProto, warmup: int
) -> tuple[dict[str, float], float]:
    """Median kernel ms per node of `graph` over the runs after `warmup`, and the median time
    per run attributed by fallback (see `node_latencies`)."""
    producers = {out: node.name for node in graph.node for out in node.output}
    return node_latencies(events, [n.name for n in graph.node], producers, warmup, chain_parents(graph))


def node_latencies(
    events: Iterable[Mapping[str, Any]],
    node_names: Sequence[str],
    producers: Mapping[str, str],
    warmup: int,
    chain_parent: Mapping[str, str] | None = None,
) -> tuple[dict[str, float], float]:
    """Median kernel time in ms per original node over the runs after `warmup`.

    A fused kernel is named after the tensor it writes, often the activation at the end
    of the chain; `chain_parent` (node -> the producer of its only data input, where that
    tensor has no other consumer) moves its time back to the first node of the chain that
    has no kernel of its own, so a Conv+Relu's time lands on the Conv, beside its weights.

    Returns the medians and the median time per run that could only be attributed to
    the node that ran before it (kernels onnxruntime inserted, such as layout reorders).
    """
    events = list(events)
    runs = [(start, start + ms * 1000.0) for start, ms in run_times(events)[warmup:]]
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(KERNEL_SUFFIX)),
        key=lambda e: e["ts"],
    )
    known = set(node_names)
    parents = chain_parent or {}
    with_kernel = {
        node for e in kernels if (node := _original_node(e["name"][: -len(KERNEL_SUFFIX)], known, producers))
    }

    def chain_head(node: str) -> str:
        # A graph is acyclic, but names need not be unique here: stop where the walk comes back.
        seen = {node}
        while node in parents and parents[node] not in with_kernel and parents[node] not in seen:
            node = parents[node]
            seen.add(node)
        return node

    per_run: list[dict[str, float]] = []
    fallback_per_run: list[float] = []
    for start, end in runs:
        times: dict[str, float] = defaultdict(float)
        fallback, previous, orphans = 0.0, None, 0.0
        for event in kernels:
            if not start <= event["ts"] <= end:
                continue
            ms = event["dur"] / 1000.0
            node = _original_node(event["name"][: -len(KERNEL_SUFFIX)], known, producers)
            if node is not None:
                node = chain_head(node)
            if node is None:
                fallback += ms
                if previous is None:
                    orphans += ms  # before any known node: goes to the first one
                else:
                    times[previous] += ms
                continue
            times[node] += ms + orphans
            orphans, previous = 0.0, node
        per_run.append(times)
        fallback_per_run.append(fallback)
    medians = {name: statistics.median(run.get(name, 0.0) for run in per_run) for name in node_names} if per_run else {}
    return medians, statistics.median(fallback_per_run) if fallback_per_run else 0.0


def run_times(events: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """(start timestamp in us, duration in ms) of every `model_run` in the trace, in order."""
    return sorted(
        (e["ts"], e["dur"] / 1000.0) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )


def _original_node(trace_name: str, known: set[str], producers: Mapping[str, str]) -> str | None:
    names = [trace_name, *(trace_name.removeprefix(p) for p in _REWRITE_PREFIXES if trace_name.startswith(p))]
    for name in names:
        if name in known:
            return name
    for name in names:
        for candidate in (name, *(name.removesuffix(s) for s in _REWRITE_SUFFIXES)):
            if candidate in producers:
                return producers[candidate]
    return None


def chain_parents(graph: onnx.GraphProto) -> dict[str, str]:
    """node -> producer of its first data input, where this node is that tensor's only consumer."""
    initializers = {t.name for t in graph.initializer}
    producers = {out: node.name for node in graph.node for out in node.output}
    consumers: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in set(node.input):
            consumers[name] += 1
    parents = {}
    for node in graph.node:
        data = [i for i in node.input if i and i not in initializers]
        if data and data[0] in producers and consumers[data[0]] == 1:
            parents[node.name] = producers[data[0]]
    return parents
