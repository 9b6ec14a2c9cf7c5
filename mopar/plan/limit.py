"""The attainable saving (pure): the limit no partition can pass.

Every node its own function, holding the runtime baseline, its weights and its activations
for its own time only: no transfer, no request fee, no billing step, the platform's memory
floor (128 MB on Lambda). Set against the model served whole the same way, it says how much
partitioning could save at best; a plan's saving is reported as the share of that it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mopar.plan.memory import MB, MemoryModel
from mopar.plan.pricing import Pricing
from mopar.plan.segments import sweep

if TYPE_CHECKING:  # the graph is only read here; its module loads onnx
    from mopar.plan.graph import Graph


@dataclass(frozen=True)
class Limit:
    gb_seconds: float  # every node its own function
    whole_gb_seconds: float  # the model as one function, counted the same way

    @property
    def saving(self) -> float:
        """GB-seconds of the whole model over the limit's (>= 1)."""
        return self.whole_gb_seconds / self.gb_seconds if self.gb_seconds else 1.0

    def share(self, saving: float) -> float:
        """The part of the attainable reduction that a saving of `saving` (whole / plan) reaches."""
        possible = 1.0 - 1.0 / self.saving
        return (1.0 - 1.0 / saving) / possible if possible > 0 else 1.0


def attainable(graph: Graph, memory: MemoryModel, pricing: Pricing) -> Limit:
    def gb_seconds(start: int, end: int) -> float:
        stats = next(sweep(graph, start, [end]))
        best = min(
            pricing.allocate_mb(memory.need_bytes(stats, prepack=prepack) / MB, "a node") / 1024 * ms / 1000
            for prepack, ms in ((True, stats.compute_ms), (False, stats.compute_unpacked_ms))
        )
        return best

    nodes = sum(gb_seconds(i, i + 1) for i in range(len(graph)))
    return Limit(gb_seconds=nodes, whole_gb_seconds=gb_seconds(0, len(graph)))
