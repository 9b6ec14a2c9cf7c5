"""MOPAR-style hybrid partitioning: vertical slices by dynamic programming, with
resource-dominant slices split into parallel sub-slices (pure).

Every candidate slice [a, b) between two cut positions is priced as a function: its
memory (`memory.MemoryModel`, rounded by the pricing table), its duration (compute +
reading its inputs + writing its outputs + one control call, from the link model), its
cost per request and its latency. A slice that is exactly a resource-dominant operator
and its channel-wise tail may also run as k parallel sub-slices, each with 1/k of the
weights, time and output. Costs and latencies of a plan are sums over its slices, so:

- `cost` and `latency`: an exact DP over (position, slices used), lexicographic on
  (cost, latency) or (latency, cost);
- `slo`: an exact DP over Pareto labels (cost, latency, slices) at each position,
  keeping only labels within the SLO; the cheapest label at the end wins.

Mixing a heavy layer into a light slice makes the whole slice pay the heavy layer's
memory for the light layers' time, so layers of similar footprint end up together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mopar.errors import PlanError
from mopar.plan.graph import Graph, SplitGroup
from mopar.plan.linkmodel import LinkModel, Transfer
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.pricing import DEFAULT_MAX_CPU, Allocation, Pricing
from mopar.plan.segments import SegmentStats, sweep

OBJECTIVES = ("cost", "latency", "slo")


@dataclass(frozen=True)
class Constraints:
    objective: str = "cost"
    slo_ms: float | None = None
    max_slices: int = 8
    min_slice_memory_mb: int | None = None
    max_slice_memory_mb: int | None = None
    split: bool = True  # consider parallel sub-slices for resource-dominant operators
    max_split: int = 8
    dominance: float = 0.05  # share of the model's weights or time that makes an operator dominant
    max_cut_tensors: int = 4
    slices: int | None = None  # exactly this many slices (None: whatever the objective prefers)
    cores: int | None = None  # vCPUs that can run at once (None: every function its own)
    max_batch: int | None = None  # the largest batch a request may carry (None: the batch profiled)
    min_cpu: float | None = None  # vCPUs a slice may be given (None: the pricing table's smallest)
    max_cpu: float | None = None  # (None: --cores where given, else DEFAULT_MAX_CPU)
    whole_cpus: bool = False  # only whole vCPUs (a local run cannot hold a process to a fraction)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise PlanError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "slo" and (self.slo_ms is None or self.slo_ms <= 0):
            raise PlanError("objective slo needs a positive --slo-ms")
        if self.max_slices < 1 or self.max_split < 1 or self.max_cut_tensors < 1:
            raise PlanError("--max-slices, --max-split and --max-cut-tensors must be at least 1")
        if self.slices is not None and self.slices < 1:
            raise PlanError(f"--slices must be at least 1, got {self.slices}")
        if self.cores is not None and self.cores < 1:
            raise PlanError(f"--cores must be at least 1, got {self.cores}")
        if self.max_batch is not None and self.max_batch < 1:
            raise PlanError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.min_cpu is not None and self.min_cpu <= 0:
            raise PlanError(f"--min-cpu must be positive, got {self.min_cpu:g}")
        if self.max_cpu is not None and (self.max_cpu <= 0 or self.max_cpu < (self.min_cpu or 0)):
            raise PlanError(f"--max-cpu must be positive and at least --min-cpu, got {self.max_cpu:g}")

    @property
    def cpu_ceiling(self) -> float:
        """The most vCPUs one function may be given: --max-cpu, at most --cores."""
        ceiling = self.max_cpu if self.max_cpu is not None else (self.cores or DEFAULT_MAX_CPU)
        return min(ceiling, self.cores) if self.cores else ceiling


@dataclass(frozen=True)
class Option:
    """One way to run the slice [stats.start, stats.end): whole, or in `parts` sub-slices."""

    stats: SegmentStats
    parts: int
    group: SplitGroup | None
    need_mb: float  # per function
    allocation: Allocation  # per function: memory and vCPUs; it runs allocation.threads threads
    duration_ms: float  # per function
    latency_ms: float  # of the slice (sub-slices run in parallel)
    cost_usd: float  # all of the slice's functions, per request
    gb_seconds: float
    vcpu_seconds: float
    touched_byte_ms: float  # memory the slice's nodes touch over time
    allocated_byte_ms: float  # memory its functions are billed for over time
    writes: Mapping[str, Transfer] = field(default_factory=dict)
    prepack: bool = True  # its sessions pre-pack weights (`profile.prepacking`)

    @property
    def memory_mb(self) -> int:
        return self.allocation.memory_mb

    @property
    def vcpus(self) -> float:
        return self.allocation.vcpus

    @property
    def threads(self) -> int:
        return self.allocation.threads


@dataclass
class Plan:
    graph: Graph
    constraints: Constraints
    pricing: Pricing
    link: LinkModel
    memory: MemoryModel
    slices: list[Option]
    whole: Option
    gateway_ms: float  # the gateway's handling, writing the request's inputs and reading its outputs

    @property
    def latency_ms(self) -> float:
        return self.gateway_ms + sum(s.latency_ms for s in self.slices)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.slices)

    def figures(self, options: list[Option] | None = None) -> dict[str, Any]:
        options = self.slices if options is None else options
        touched = sum(o.touched_byte_ms for o in options)
        allocated = sum(o.allocated_byte_ms for o in options)
        return {
            "latency_ms": round(self.gateway_ms + sum(o.latency_ms for o in options), 4),
            "gb_seconds": round(sum(o.gb_seconds for o in options), 8),
            "vcpu_seconds": round(sum(o.vcpu_seconds for o in options), 8),
            "cost_per_million_usd": round(1e6 * sum(o.cost_usd for o in options), 6),
            "resource_efficiency": round(touched / allocated, 4) if allocated else 0.0,
            "functions": sum(o.parts for o in options),
            "memory_mb": [o.memory_mb for o in options],
            "cpu": [o.vcpus for o in options],
            "threads": [o.threads for o in options],
        }


class Coster:
    """Prices candidate slices under one pricing table, link model and memory model."""

    def __init__(
        self, graph: Graph, memory: MemoryModel, link: LinkModel, pricing: Pricing, constraints: Constraints
    ) -> None:
        self.graph, self.memory, self.link, self.pricing, self.constraints = graph, memory, link, pricing, constraints
        self._transfers: dict[tuple[str, int], Transfer] = {}
        self._prefix: dict[int, list[float]] = {}  # threads -> prefix sums of node times

    def transfer(self, tensor: str, parts: int = 1) -> Transfer:
        key = (tensor, parts)
        if key not in self._transfers:
            size = self.graph.tensor_bytes.get(tensor, 0) // parts
            self._transfers[key] = self.link.transfer(size, self.graph.ratios.get(tensor))
        return self._transfers[key]

    def gateway_ms(self) -> float:
        """What a request spends at the gateway: its own handling, writing the request's inputs
        and reading the outputs."""
        return self.link.request_ms + self.io_ms(tuple(self.graph.outputs), tuple(self.graph.inputs))

    def io_ms(self, reads: tuple[str, ...], writes: tuple[str, ...], parts: int = 1) -> float:
        """Store time of a function reading `reads` whole and writing 1/parts of each of `writes`."""
        incoming = [self.transfer(t) for t in reads]
        outgoing = [self.transfer(t, parts) for t in writes]
        read = sum(t.read_ms for t in incoming) + (self.link.hop_ms if any(not t.inline for t in incoming) else 0.0)
        write = sum(t.write_ms for t in outgoing) + (self.link.hop_ms if any(not t.inline for t in outgoing) else 0.0)
        return read + write

    def compute_ms(self, stats: SegmentStats, threads: int, prepack: bool = True) -> float:
        """Kernel time of the slice with `threads` intra-op threads: each node at its own
        scaling (prefix sums per thread count, so any slice costs O(1)). Without pre-packing
        (profiled at one thread) it scales as the packed slice does."""
        if threads not in self._prefix:
            running, sums = 0.0, [0.0]
            for node in self.graph.nodes:
                running += node.latency_at(threads)
                sums.append(running)
            self._prefix[threads] = sums
        sums = self._prefix[threads]
        packed = sums[stats.end] - sums[stats.start] if threads > 1 else stats.compute_ms
        if prepack:
            return packed
        return stats.compute_unpacked_ms * (packed / stats.compute_ms if stats.compute_ms > 0 else 1.0)

    def part_compute_ms(
        self, stats: SegmentStats, parts: int, group: SplitGroup | None, prepack: bool = True, threads: int = 1
    ) -> float:
        """Compute time of one of `parts` sub-slices: the dominant operator divides by its measured
        serial fraction s (a part takes t x (s + (1 - s) / k)), its channel-wise tail evenly.
        (With fewer cores than parts, the parts share them: see `option`.)"""
        total = self.compute_ms(stats, threads, prepack)
        if parts == 1 or group is None:
            return total
        head = self.graph.nodes[group.start]
        head_ms = head.latency_at(threads)
        if not prepack and head.latency_unpacked_ms is not None and head.latency_ms > 0:
            head_ms *= head.latency_unpacked_ms / head.latency_ms
        serial = self.graph.serial_fractions.get(head.name, 0.0)
        divided = (total - head_ms) / parts + head_ms * (serial + (1 - serial) / parts)
        return self.link.part_ms(divided * parts, parts)

    def allocations(self, need_mb: float) -> list[Allocation]:
        """What a function needing `need_mb` may be given, within the memory and CPU bounds."""
        bounds = self.constraints
        found = self.pricing.allocations(
            max(need_mb, bounds.min_slice_memory_mb or 0), bounds.min_cpu, bounds.cpu_ceiling
        )
        if bounds.max_slice_memory_mb is not None:
            found = [a for a in found if a.memory_mb <= bounds.max_slice_memory_mb]
        if bounds.whole_cpus:
            found = [a for a in found if a.vcpus == a.threads]
        return found

    def option(
        self,
        stats: SegmentStats,
        parts: int = 1,
        group: SplitGroup | None = None,
        prepack: bool = True,
        allocation: Allocation | None = None,
    ) -> Option | None:
        """The slice run as `parts` functions of `allocation` each (None: the smallest allowed);
        None where no allocation holds it."""
        need_mb = self.memory.need_bytes(stats, parts, prepack) / MB
        if allocation is None:
            allowed = self.allocations(need_mb)
            if not allowed:
                return None
            allocation = allowed[0]
        threads = allocation.threads
        compute = self.part_compute_ms(stats, parts, group, prepack, threads) * allocation.slowdown
        duration = self.link.invoke_ms + compute + self.io_ms(stats.inputs, stats.outputs, parts)
        # With fewer cores than the parts' threads, the parts take turns on them.
        cores = self.constraints.cores
        duration *= max(1.0, parts * threads / cores) if cores else 1.0
        billed = self.pricing.billed_ms(duration)
        baseline = self.memory.baseline_bytes
        scale = compute / stats.compute_ms if stats.compute_ms > 0 else 1.0  # node times at this size
        touched = (
            parts * baseline * duration + (stats.touched_byte_ms / parts + stats.input_bytes * stats.compute_ms) * scale
        )
        return Option(
            stats=stats,
            parts=parts,
            group=group,
            need_mb=need_mb,
            allocation=allocation,
            duration_ms=duration,
            latency_ms=duration,
            cost_usd=parts * self.pricing.invocation_usd(allocation, duration),
            gb_seconds=parts * self.pricing.gb_seconds(allocation, duration),
            vcpu_seconds=parts * self.pricing.vcpu_seconds(allocation, duration),
            touched_byte_ms=touched,
            allocated_byte_ms=parts * allocation.memory_mb * MB * billed,
            writes={t: self.transfer(t, parts) for t in stats.outputs},
            prepack=prepack,
        )

    def options(self, stats: SegmentStats, group: SplitGroup | None) -> list[Option]:
        """Every way to run the slice that is not beaten on both cost and latency by another:
        whole or split, with and without pre-packing where that changes anything, at every
        size the pricing table and the bounds allow."""
        packings = [True, False] if stats.packed_bytes or stats.compute_unpacked_ms != stats.compute_ms else [True]
        splits = [1]
        if group is not None and self.constraints.split:
            splits += list(range(2, min(self.constraints.max_split, group.channels) + 1))
        options = []
        for parts in splits:
            for prepack in packings:
                need_mb = self.memory.need_bytes(stats, parts, prepack) / MB
                for allocation in self.allocations(need_mb):
                    option = self.option(stats, parts, group if parts > 1 else None, prepack, allocation)
                    if option is not None:
                        options.append(option)
        return frontier(options)


def frontier(options: list[Option]) -> list[Option]:
    """The options no other beats on both cost and latency (ties: the fewer vCPUs and parts)."""
    kept: list[Option] = []
    for option in sorted(options, key=lambda o: (o.cost_usd, o.latency_ms, o.parts * o.vcpus)):
        if not kept or option.latency_ms < kept[-1].latency_ms - 1e-12:
            kept.append(option)
    return kept


def plan(
    graph: Graph,
    memory: MemoryModel,
    link: LinkModel,
    pricing: Pricing,
    constraints: Constraints | None = None,
) -> Plan:
    """The best plan for `graph` under `constraints`; PlanError names the bound that fails."""
    constraints = constraints or Constraints()
    coster = Coster(graph, memory, link, pricing, constraints)
    positions = graph.cut_positions(constraints.max_cut_tensors)
    table = option_table(graph, coster, positions)
    n = len(graph)
    whole_stats = next(sweep(graph, 0, [n]))
    # The model served as one function, the best way it can be (pre-packed or not).
    gateway_ms = coster.gateway_ms()
    whole = best_whole(coster.options(whole_stats, None), constraints, gateway_ms) or _unbounded(coster, whole_stats)
    if constraints.objective == "slo":
        chosen = _pareto_dp(table, len(positions), constraints, gateway_ms)
    else:
        chosen = _scalar_dp(table, len(positions), constraints)
    if chosen is None:
        raise _explain_infeasible(graph, coster, constraints, table, positions, gateway_ms)
    return Plan(graph, constraints, pricing, link, memory, chosen, whole, gateway_ms)


def option_table(graph: Graph, coster: Coster, positions: list[int]) -> dict[tuple[int, int], list[Option]]:
    """Options of every slice between two cut positions, keyed by position indices."""
    index = {p: i for i, p in enumerate(positions)}
    groups = {}
    if coster.constraints.split:
        groups = {(g.start, g.end): g for g in graph.split_groups(coster.constraints.dominance)}
    table: dict[tuple[int, int], list[Option]] = {}
    for i, start in enumerate(positions[:-1]):
        for stats in sweep(graph, start, positions[i + 1 :]):
            options = coster.options(stats, groups.get((stats.start, stats.end)))
            if options:
                table[(i, index[stats.end])] = options
    return table


def best_whole(options: list[Option], constraints: Constraints, gateway_ms: float) -> Option | None:
    """The model served as one function at its best size for the objective: the fastest for
    latency, the cheapest for cost, the cheapest that meets the SLO for slo (the fastest where
    none does). What a plan is measured against."""
    if not options:
        return None
    if constraints.objective == "slo":
        assert constraints.slo_ms is not None
        meeting = [o for o in options if gateway_ms + o.latency_ms <= constraints.slo_ms + 1e-9]
        if meeting:
            return min(meeting, key=lambda o: _key(o, "cost"))
        return min(options, key=lambda o: _key(o, "latency"))
    return min(options, key=lambda o: _key(o, constraints.objective))


def _key(option: Option, objective: str) -> tuple[float, float]:
    if objective == "latency":
        return option.latency_ms, option.cost_usd
    return option.cost_usd, option.latency_ms


# One cell of `_scalar_dp`'s table: (key, previous position, option); no option at the start.
_Step = tuple[tuple[float, float], int, Option | None]


def _scalar_dp(
    table: Mapping[tuple[int, int], list[Option]], count: int, constraints: Constraints
) -> list[Option] | None:
    """Lexicographically best plan with at most `max_slices` slices, or exactly `slices` (exact)."""
    objective = constraints.objective
    best_option = {pair: min(options, key=lambda o: _key(o, objective)) for pair, options in table.items()}
    into: dict[int, list[tuple[int, Option]]] = {}
    for (i, j), option in best_option.items():
        into.setdefault(j, []).append((i, option))
    # layer[c][j]: best (key, previous position, option) covering positions[0..j] with c slices
    layer: list[dict[int, _Step]] = [{0: ((0.0, 0.0), -1, None)}]
    final = count - 1
    best_end: tuple[tuple[float, float], int] | None = None
    for c in range(1, (constraints.slices or constraints.max_slices) + 1):
        previous = layer[-1]
        current: dict[int, _Step] = {}
        for j in range(1, count):
            for i, option in into.get(j, []):
                if i not in previous:
                    continue
                before = previous[i][0]
                key_ = _key(option, objective)
                total = (before[0] + key_[0], before[1] + key_[1])
                if j not in current or total < current[j][0]:
                    current[j] = (total, i, option)
        layer.append(current)
        wanted = constraints.slices is None or c == constraints.slices
        if wanted and final in current and (best_end is None or current[final][0] < best_end[0]):
            best_end = (current[final][0], c)
        if not current:
            break
    if best_end is None:
        return None
    chosen: list[Option] = []
    j, c = final, best_end[1]
    while c > 0:
        _, i, picked = layer[c][j]
        assert picked is not None
        chosen.append(picked)
        j, c = i, c - 1
    return chosen[::-1]


@dataclass(frozen=True)
class _Label:
    cost: float
    latency: float
    slices: int
    previous: _Label | None
    option: Option | None


def _pareto_dp(
    table: Mapping[tuple[int, int], list[Option]], count: int, constraints: Constraints, gateway_ms: float
) -> list[Option] | None:
    """Cheapest plan whose predicted latency meets the SLO (exact over Pareto labels)."""
    assert constraints.slo_ms is not None
    budget = constraints.slo_ms - gateway_ms
    into: dict[int, list[tuple[int, list[Option]]]] = {}
    for (i, j), options in table.items():
        into.setdefault(j, []).append((i, options))
    limit = constraints.slices or constraints.max_slices
    exact = constraints.slices is not None
    labels: dict[int, list[_Label]] = {0: [_Label(0.0, 0.0, 0, None, None)]}
    for j in range(1, count):
        candidates = [
            _Label(label.cost + o.cost_usd, label.latency + o.latency_ms, label.slices + 1, label, o)
            for i, options in into.get(j, [])
            for label in labels.get(i, [])
            if label.slices < limit
            for o in options
            if label.latency + o.latency_ms <= budget + 1e-9
        ]
        labels[j] = _non_dominated(candidates, exact)
    final = [label for label in labels.get(count - 1, []) if not exact or label.slices == constraints.slices]
    if not final:
        return None
    best = min(final, key=lambda label: (label.cost, label.latency))
    chosen = []
    label: _Label | None = best
    while label is not None and label.option is not None:
        chosen.append(label.option)
        label = label.previous
    return chosen[::-1]


def _non_dominated(labels: list[_Label], exact: bool = False) -> list[_Label]:
    """Labels no cheaper-or-equal label beats on latency and slice count; with an exact slice
    count, a label is only beaten by one of the same count (fewer slices are not an option)."""
    kept: list[_Label] = []
    for label in sorted(labels, key=lambda x: (x.cost, x.latency, x.slices)):
        beaten = (
            k.latency <= label.latency and (k.slices == label.slices if exact else k.slices <= label.slices)
            for k in kept
        )
        if not any(beaten):
            kept.append(label)
    return kept


def _unbounded(coster: Coster, stats: SegmentStats) -> Option:
    """The whole model priced without the pricing table's memory ceiling (for comparison only)."""
    relaxed_bounds = Constraints(max_cpu=coster.pricing.cpu_max)
    relaxed = Coster(coster.graph, coster.memory, coster.link, _no_ceiling(coster.pricing), relaxed_bounds)
    option = relaxed.option(stats)
    assert option is not None
    return option


def _no_ceiling(pricing: Pricing) -> Pricing:
    return replace(pricing, memory_max_mb=10**9, mb_per_vcpu_max=None)


def _explain_infeasible(
    graph: Graph,
    coster: Coster,
    constraints: Constraints,
    table: Mapping[tuple[int, int], list[Option]],
    positions: list[int],
    gateway_ms: float,
) -> PlanError:
    """Why no plan fits: an operator too big for any slice, or an SLO below the fastest plan."""
    ceiling = min(coster.pricing.memory_max_mb, constraints.max_slice_memory_mb or 10**9)
    if coster.pricing.mb_per_vcpu_max is not None:  # more memory needs more vCPUs than allowed
        ceiling = min(ceiling, int(constraints.cpu_ceiling * coster.pricing.mb_per_vcpu_max))
    splittable = {g.start for g in graph.split_groups(0.0)} if constraints.split else set()
    for index, node in enumerate(graph.nodes):
        stats = next(sweep(graph, index, [index + 1]))
        need = coster.memory.need_bytes(stats, constraints.max_split if index in splittable else 1) / MB
        if need > ceiling:
            return PlanError(
                f"operator {node.name} ({node.op_type}) alone needs {need:,.0f} MB, "
                f"above the per-slice memory bound of {ceiling:,} MB"
            )
    if constraints.objective == "slo":
        fastest = _scalar_dp(table, len(positions), replace(constraints, objective="latency", slo_ms=None))
        if fastest is not None:
            best = gateway_ms + sum(o.latency_ms for o in fastest)
            return PlanError(f"SLO {constraints.slo_ms:g} ms is below the fastest possible latency {best:.2f} ms")
    if constraints.slices is not None:
        return PlanError(
            f"no plan of exactly {constraints.slices} slices: with at most {constraints.max_cut_tensors} "
            f"tensor(s) crossing a cut (--max-cut-tensors) the model splits into at most {len(positions) - 1}, "
            f"each within {ceiling:,} MB"
        )
    return PlanError(
        f"no plan of at most {constraints.max_slices} slices fits the memory bound of {ceiling:,} MB per slice"
    )
