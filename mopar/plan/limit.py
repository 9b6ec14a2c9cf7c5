"""The attainable saving (pure): the limit no partition can pass.

Every node its own function at its own best size (memory and vCPUs), holding the runtime
baseline, its weights and its activations for its own time only: no transfer, no request
fee, no billing step, the platform's floors. Set against the model served whole the same way
(at its own best size), it says how much partitioning could save at best under a pricing
table; a plan's saving is reported as the share of that it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mopar.plan.memory import MB, MemoryModel
from mopar.plan.pricing import Pricing
from mopar.plan.segments import sweep

if TYPE_CHECKING:  # the graph is only read here; its module loads onnx
    from mopar.plan.graph import Graph

NOTHING_ATTAINABLE = 0.005  # a bound below 0.5 % is no room at all: a plan reaches all of it


@dataclass(frozen=True)
class Limit:
    usd: float  # resource cost per request, every node its own function
    whole_usd: float  # the model as one function, counted the same way

    @property
    def saving(self) -> float:
        """Cost of the whole model over the limit's (>= 1)."""
        return max(1.0, self.whole_usd / self.usd) if self.usd else 1.0

    def share(self, saving: float) -> float:
        """The part of the attainable reduction that a saving of `saving` (whole / plan) reaches."""
        possible = 1.0 - 1.0 / self.saving
        if possible < NOTHING_ATTAINABLE:
            return 1.0
        return (1.0 - 1.0 / saving) / possible


def attainable(
    graph: Graph, memory: MemoryModel, pricing: Pricing, min_cpu: float | None = None, max_cpu: float | None = None
) -> Limit:
    def best_usd(start: int, end: int) -> float:
        stats = next(sweep(graph, start, [end]))
        costs = []
        for prepack in (True, False):
            unpacked = stats.compute_unpacked_ms / stats.compute_ms if stats.compute_ms > 0 else 1.0
            for allocation in pricing.allocations(memory.need_bytes(stats, prepack=prepack) / MB, min_cpu, max_cpu):
                ms = sum(node.latency_at(allocation.threads) for node in graph.nodes[start:end])
                ms *= allocation.slowdown * (1.0 if prepack else unpacked)
                costs.append(pricing.resource_usd(allocation, ms))
        return min(costs, default=float("inf"))

    nodes = sum(best_usd(i, i + 1) for i in range(len(graph)))
    return Limit(usd=nodes, whole_usd=best_usd(0, len(graph)))
