"""CPU as a planned resource: the planner gives a slice more vCPUs where its nodes scale and
an objective pays for them, fewer where they do not (synthetic node times, never timings)."""

from __future__ import annotations

import pytest

from mopar.plan import pricing
from mopar.plan.graph import Graph, Node
from mopar.plan.linkmodel import LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, plan

LINK = LinkModel(hop_ms=0.1, bytes_per_ms=1_000_000, invoke_ms=0.5, codecs={})
MEMORY = MemoryModel(baseline_bytes=80 * MB)


def chain(fractions: list[float], ms: float = 100.0) -> Graph:
    """A chain of nodes of `ms` each at one thread, node i with Amdahl's serial fraction
    fractions[i] (0: twice as fast with two threads; 1: no faster), small tensors between."""
    nodes, sizes, weights = [], {"x": 1000}, {}
    for i, fraction in enumerate(fractions):
        weights[f"w{i}"] = 20 * MB
        sizes[f"t{i}"] = 1000
        reads = "x" if i == 0 else f"t{i - 1}"
        nodes.append(
            Node(
                f"n{i}", "MatMul", (reads,), (f"t{i}",), (f"w{i}",), ms, {}, (reads, f"w{i}"), serial_fraction=fraction
            )
        )
    return Graph("chain", nodes, sizes, weights, ["x"], [f"t{len(fractions) - 1}"])


def test_a_node_time_follows_amdahl_beyond_what_was_measured() -> None:
    node = Node("n", "Conv", ("x",), ("y",), latency_ms=100.0, latency_by_threads={2: 60.0}, serial_fraction=0.2)
    assert node.latency_at(1) == 100.0 and node.latency_at(2) == 60.0
    assert node.latency_at(4) == pytest.approx(100.0 * (0.2 + 0.8 / 4))
    assert Node("m", "Conv", ("x",), ("y",), latency_ms=10.0).latency_at(8) == 10.0  # one thread profiled


@pytest.mark.parametrize("table", [pricing.KUBERNETES, pricing.KNATIVE])
def test_latency_takes_every_vcpu_that_helps_and_none_that_does_not(table: pricing.Pricing) -> None:
    scales = plan(chain([0.0]), MEMORY, LINK, table, Constraints(objective="latency", max_cpu=4.0))
    assert [o.vcpus for o in scales.slices] == [4.0] and scales.slices[0].threads == 4
    flat = plan(chain([1.0]), MEMORY, LINK, table, Constraints(objective="latency", max_cpu=4.0))
    assert flat.slices[0].vcpus == table.cpu_choices(None, 4.0)[0] or flat.slices[0].vcpus <= 1.0


def test_cost_gives_a_node_that_does_not_scale_no_more_than_one_vcpu() -> None:
    result = plan(chain([1.0]), MEMORY, LINK, pricing.KUBERNETES, Constraints(objective="cost", max_cpu=4.0))
    assert result.slices[0].vcpus <= 1.0


def test_an_slo_buys_vcpus_for_the_slice_that_scales_and_not_for_the_one_that_does_not() -> None:
    # Two nodes of 100 ms: n0 twice as fast per doubling of threads, n1 no faster at all.
    graph = chain([0.0, 1.0])
    constraints = Constraints(objective="slo", slo_ms=160.0, max_cpu=4.0, split=False)
    result = plan(graph, MEMORY, LINK, pricing.KUBERNETES, constraints)
    assert result.latency_ms <= 160.0
    assert len(result.slices) == 2
    scaling, flat = result.slices
    assert scaling.vcpus > 1.0 and flat.vcpus <= 1.0
    # The model whole at the size that meets the SLO pays those vCPUs for n1's time too.
    assert result.whole.latency_ms + result.gateway_ms <= 160.0
    assert result.cost_usd < result.whole.cost_usd


def test_no_slice_is_given_more_than_the_cores_or_outside_the_bounds() -> None:
    graph = chain([0.0, 0.0, 0.5])
    for constraints, low, high in (
        (Constraints(objective="latency", cores=2), 0.25, 2.0),
        (Constraints(objective="latency", min_cpu=1.0, max_cpu=1.0), 1.0, 1.0),
        (Constraints(objective="cost", min_cpu=0.5, max_cpu=3.0), 0.5, 3.0),
    ):
        result = plan(graph, MEMORY, LINK, pricing.KUBERNETES, constraints)
        assert all(low <= o.vcpus <= high for o in [*result.slices, result.whole])


def test_under_lambda_more_vcpus_are_bought_as_memory() -> None:
    result = plan(chain([0.0]), MEMORY, LINK, pricing.LAMBDA, Constraints(objective="latency", max_cpu=2.0))
    (only,) = result.slices
    assert only.vcpus == 2.0 and only.memory_mb == 2 * 1769


def test_within_an_slo_no_plan_passes_the_bound_and_the_bound_sees_the_room() -> None:
    from mopar.plan.limit import attainable

    graph = chain([0.0, 1.0])
    for slo in (130.0, 160.0, 210.0):
        constraints = Constraints(objective="slo", slo_ms=slo, max_cpu=4.0)
        result = plan(graph, MEMORY, LINK, pricing.KUBERNETES, constraints)
        bound = attainable(graph, MEMORY, pricing.KUBERNETES, max_cpu=4.0, within_ms=slo - result.gateway_ms)
        assert result.cost_usd >= bound.usd * (1 - 1e-9)
    # At 160 ms the whole model needs its vCPUs for the node that does not scale too: room.
    assert bound.saving >= 1.0
    tight = attainable(graph, MEMORY, pricing.KUBERNETES, max_cpu=4.0, within_ms=160.0)
    assert tight.saving > 1.0
