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
        return share_reached(self.saving, saving)


def share_reached(attainable_saving: float, saving: float) -> float:
    """The part of the reduction an attainable saving allows that a saving reaches (both as
    whole / plan); all of it where the bound leaves no room."""
    possible = 1.0 - 1.0 / attainable_saving
    if possible < NOTHING_ATTAINABLE:
        return 1.0
    return (1.0 - 1.0 / saving) / possible


def attainable(
    graph: Graph,
    memory: MemoryModel,
    pricing: Pricing,
    min_cpu: float | None = None,
    max_cpu: float | None = None,
    whole_cpus: bool = False,
    within_ms: float | None = None,
) -> Limit:
    """The limit under `pricing` with each function's vCPUs in [min_cpu, max_cpu] (whole vCPUs
    only with `whole_cpus`). With `within_ms`, under a latency budget too: the model whole at
    its cheapest size within it, against a lower bound on every node its own function with
    the nodes' times summing within it (a Lagrangian bound on choosing each node's size:
    for any price per millisecond, the nodes' cheapest sizes at that price, less the
    budget's worth, cost no more than the best choice within the budget)."""

    def sizes(start: int, end: int) -> list[tuple[float, float]]:
        """(resource usd, ms) of [start, end) as one function at each allowed size."""
        stats = next(sweep(graph, start, [end]))
        found = []
        for prepack in (True, False):
            unpacked = stats.compute_unpacked_ms / stats.compute_ms if stats.compute_ms > 0 else 1.0
            for allocation in pricing.allocations(memory.need_bytes(stats, prepack=prepack) / MB, min_cpu, max_cpu):
                if whole_cpus and allocation.vcpus != allocation.threads:
                    continue
                ms = sum(node.latency_at(allocation.threads) for node in graph.nodes[start:end])
                ms *= allocation.slowdown * (1.0 if prepack else unpacked)
                found.append((pricing.resource_usd(allocation, ms), ms))
        return found

    nodes = [sizes(i, i + 1) for i in range(len(graph))]
    whole = sizes(0, len(graph))
    if within_ms is None:
        cheapest = sum(min((usd for usd, _ in node), default=float("inf")) for node in nodes)
        return Limit(usd=cheapest, whole_usd=min((usd for usd, _ in whole), default=float("inf")))
    meeting = [usd for usd, ms in whole if ms <= within_ms]
    whole_usd = min(meeting) if meeting else min((usd for usd, _ in whole), default=float("inf"))
    return Limit(usd=_within(nodes, within_ms), whole_usd=whole_usd)


def _within(nodes: list[list[tuple[float, float]]], budget_ms: float) -> float:
    """A lower bound on the cheapest choice of one size per node whose times sum within
    `budget_ms`: the Lagrangian dual, maximised over a grid of prices per millisecond."""

    def dual(price: float) -> float:
        return sum(min(usd + price * ms for usd, ms in node) for node in nodes if node) - price * budget_ms

    total_usd = sum(max(usd for usd, _ in node) for node in nodes if node)
    scale = total_usd / max(budget_ms, 1e-9)  # the prices where the bound turns
    prices = [0.0, *(scale * 10 ** (k / 20) for k in range(-80, 41))]
    return max(0.0, max(dual(price) for price in prices))
