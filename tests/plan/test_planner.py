"""The planner on generated DAGs: partitions are complete and ordered, costs add up, and no
brute-force partition of a small graph beats the dynamic programme (every objective)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mopar.errors import PlanError
from mopar.plan import pricing
from mopar.plan.graph import Graph, Node
from mopar.plan.linkmodel import CodecSpeed, LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, Coster, Option, plan
from mopar.plan.segments import sweep

LINK = LinkModel(
    hop_ms=0.1,
    bytes_per_ms=1_000_000,
    invoke_ms=0.5,
    codecs={"zstd1": CodecSpeed(300_000, 800_000), "zstd-5": CodecSpeed(600_000, 1_300_000)},
)
MEMORY = MemoryModel(baseline_bytes=80 * MB)


def random_dag(seed: int, n: int) -> Graph:
    """A DAG of `n` nodes in topological order: each reads one to three earlier tensors (skip
    connections), some hold weights (a few large: dominant, splittable as Conv), random times."""
    rng = np.random.default_rng(seed)
    tensors = ["x"]
    nodes, tensor_bytes, weight_bytes, weight_shapes, tensor_shapes = [], {"x": 150_000}, {}, {}, {"x": (1, 3, 8, 8)}
    ratios = {}
    for i in range(n):
        reads = sorted({tensors[-1], *rng.choice(tensors, size=rng.integers(0, 3), replace=True)})
        out = f"t{i}"
        heavy = rng.random() < 0.3
        weights: tuple[str, ...] = ()
        op = "Add"
        channels = int(rng.integers(4, 64))
        if heavy or rng.random() < 0.3:
            name = f"w{i}"
            size = int(rng.integers(20, 400) * MB) if heavy else int(rng.integers(1, 10) * MB)
            weight_bytes[name] = size
            weight_shapes[name] = (channels, 4, 3, 3)
            weights = (name,)
            if heavy:
                op, reads = "Conv", [tensors[-1]]
        tensor_bytes[out] = int(rng.integers(1_000, 3_000_000))
        tensor_shapes[out] = (1, channels, 8, 8)
        ratios[out] = {"zstd1": float(rng.uniform(1.0, 3.0)), "zstd-5": float(rng.uniform(1.0, 2.0))}
        operands = (reads[0], *weights) if op == "Conv" else (*reads, *weights)
        nodes.append(
            Node(f"n{i}", op, tuple(reads), (out,), weights, float(rng.uniform(0.2, 30.0)), {"group": 1}, operands)
        )
        tensors.append(out)
        if heavy and i + 1 < n and rng.random() < 0.5:  # a channel-wise tail on the heavy node
            tail = f"t{i}r"
            nodes.append(Node(f"n{i}r", "Relu", (out,), (tail,), (), 0.1, {}, (out,)))
            tensor_bytes[tail], tensor_shapes[tail] = tensor_bytes[out], tensor_shapes[out]
            tensors.append(tail)
    outputs = [tensors[-1]] + ([tensors[len(tensors) // 2]] if rng.random() < 0.3 else [])
    return Graph(f"dag{seed}", nodes, tensor_bytes, weight_bytes, ["x"], outputs, ratios, weight_shapes, tensor_shapes)


def _plan_value(options: list[Option], objective: str) -> tuple[float, float]:
    cost = sum(o.cost_usd for o in options)
    latency = sum(o.latency_ms for o in options)
    return (latency, cost) if objective == "latency" else (cost, latency)


def brute_force(graph: Graph, constraints: Constraints, table_pricing: pricing.Pricing) -> tuple[float, float] | None:
    """Best (objective, tiebreak) over every partition at the allowed cuts and every option per slice."""
    coster = Coster(graph, MEMORY, LINK, table_pricing, constraints)
    positions = graph.cut_positions(constraints.max_cut_tensors)
    inner = positions[1:-1]
    groups = {(g.start, g.end): g for g in graph.split_groups(constraints.dominance)} if constraints.split else {}
    gateway = coster.io_ms(tuple(graph.outputs), tuple(graph.inputs))
    best = None
    for count in range(len(inner) + 1):
        for cuts in itertools.combinations(inner, count):
            bounds = [0, *cuts, len(graph)]
            if len(bounds) - 1 > constraints.max_slices:
                continue
            per_slice = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                stats = next(sweep(graph, a, [b]))
                per_slice.append(coster.options(stats, groups.get((a, b))))
            if any(not options for options in per_slice):
                continue
            for choice in itertools.product(*per_slice):
                if constraints.objective == "slo" and gateway + sum(o.latency_ms for o in choice) > constraints.slo_ms:
                    continue
                value = _plan_value(list(choice), constraints.objective)
                if best is None or value < best:
                    best = value
    return best


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 9),
    objective=st.sampled_from(["cost", "latency", "slo"]),
    table=st.sampled_from(["lambda", "lambda-cpu-scaled", "knative"]),
    max_slices=st.integers(1, 5),
)
def test_no_brute_force_partition_beats_the_dp(seed: int, n: int, objective: str, table: str, max_slices: int) -> None:
    graph = random_dag(seed, n)
    table_pricing = pricing.load(table)
    slo = None
    if objective == "slo":  # an SLO between the fastest plan and the whole model's latency
        fastest = plan(
            graph, MEMORY, LINK, table_pricing, Constraints(objective="latency", max_slices=max_slices, max_split=3)
        )
        slo = (fastest.latency_ms + fastest.figures([fastest.whole])["latency_ms"]) / 2 + 0.01
    constraints = Constraints(objective=objective, slo_ms=slo, max_slices=max_slices, max_split=3)
    expected = brute_force(graph, constraints, table_pricing)
    assert expected is not None
    result = plan(graph, MEMORY, LINK, table_pricing, constraints)
    got = _plan_value(result.slices, objective)
    assert got[0] <= expected[0] * (1 + 1e-9) + 1e-15
    assert got[0] >= expected[0] * (1 - 1e-9) - 1e-15  # the DP's plan is itself a partition
    if objective == "slo":
        assert result.latency_ms <= slo + 1e-9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), objective=st.sampled_from(["cost", "latency"]))
def test_plans_are_complete_ordered_and_add_up(seed: int, n: int, objective: str) -> None:
    graph = random_dag(seed, n)
    constraints = Constraints(objective=objective)
    result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, constraints)
    # every node lands in exactly one slice, slices in order
    covered = [i for option in result.slices for i in range(option.stats.start, option.stats.end)]
    assert covered == list(range(len(graph)))
    # every slice's inputs are produced earlier (by an earlier slice or the request)
    for option in result.slices:
        for tensor in option.stats.inputs:
            assert graph.producer[tensor] < option.stats.start
    # the plan's cost is the sum of its slices' costs, each priced on its own
    coster = Coster(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, constraints)
    total = 0.0
    for option in result.slices:
        alone = coster.option(next(sweep(graph, option.stats.start, [option.stats.end])), option.parts, option.group)
        assert alone is not None and alone.cost_usd == pytest.approx(option.cost_usd)
        total += alone.cost_usd
    assert result.cost_usd == pytest.approx(total)
    assert len(result.slices) <= constraints.max_slices


def test_a_small_model_stays_whole_under_request_fees() -> None:
    """Each slice is an invocation: where fees outweigh the GB-seconds saved, one slice wins."""
    nodes = [Node(f"n{i}", "Relu", (f"t{i - 1}" if i else "x",), (f"t{i}",), (), 0.3) for i in range(6)]
    graph = Graph("tiny", nodes, {"x": 1000, **{f"t{i}": 1000 for i in range(6)}}, {}, ["x"], ["t5"])
    assert len(plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT).slices) == 1


def test_heavy_weights_go_apart_from_long_light_layers() -> None:
    """A long, light stretch then a short stretch holding big weights: mixing them would make
    the light layers pay the heavy memory, so the planner cuts between them."""
    nodes, sizes, weights = [], {"x": 100_000}, {}
    for i in range(8):
        heavy = i >= 6
        w = (f"w{i}",) if heavy else ()
        if heavy:
            weights[f"w{i}"] = 300 * MB
        nodes.append(Node(f"n{i}", "Add", (f"t{i - 1}" if i else "x",), (f"t{i}",), w, 1.0 if heavy else 40.0))
        sizes[f"t{i}"] = 100_000
    graph = Graph("two-part", nodes, sizes, weights, ["x"], ["t7"])
    result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(split=False))
    assert [(o.stats.start, o.stats.end) for o in result.slices] == [(0, 6), (6, 8)]
    assert result.cost_usd < result.whole.cost_usd


def test_pad_is_never_separated_from_the_pool_it_fuses_into() -> None:
    nodes = [
        Node("pad", "Pad", ("x",), ("p",), (), 1.0),
        Node("relu", "Relu", ("p",), ("r",), (), 1.0),
        Node("pool", "MaxPool", ("p",), ("m",), (), 1.0),
        Node("add", "Add", ("r", "m"), ("y",), (), 1.0),
    ]
    graph = Graph("pad", nodes, {t: 1000 for t in "xprmy"}, {}, ["x"], ["y"])
    assert graph.cut_positions(8) == [0, 3, 4]


def test_unsatisfiable_memory_bound_names_the_operator() -> None:
    nodes = [Node("embed", "Gather", ("x",), ("y",), ("table",), 1.0)]
    graph = Graph("big", nodes, {"x": 100, "y": 100}, {"table": 900 * MB}, ["x"], ["y"])
    with pytest.raises(PlanError, match="embed .*Gather.* 512"):
        plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(max_slice_memory_mb=512))


def test_slo_below_the_fastest_latency_says_so() -> None:
    graph = random_dag(3, 6)
    with pytest.raises(PlanError, match="SLO 0.001 ms is below the fastest possible latency"):
        plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="slo", slo_ms=0.001))


def test_pricing_from_a_file(tmp_path) -> None:
    path = tmp_path / "mycloud.yaml"
    path.write_text("base: lambda-flat\ngb_second_usd: 0.00001\nrequest_usd: 0\n")
    table = pricing.load(str(path))
    assert table.name == "mycloud" and table.gb_second_usd == 0.00001 and table.memory_min_mb == 128
    path.write_text("gb_seconds_usd: 1\n")
    with pytest.raises(Exception, match="unknown keys gb_seconds_usd"):
        pricing.load(str(path))


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_exactly_n_slices(count: int) -> None:
    """`--slices N`: N slices, the best N for the objective, even where fewer would be cheaper."""
    graph = random_dag(11, 9)
    for objective in ("cost", "latency"):
        result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective=objective, slices=count))
        assert len(result.slices) == count
        best = brute_force_exact(graph, Constraints(objective=objective, slices=count))
        assert _plan_value(result.slices, objective) == pytest.approx(best)


def brute_force_exact(graph: Graph, constraints: Constraints) -> tuple[float, float]:
    coster = Coster(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, constraints)
    inner = graph.cut_positions(constraints.max_cut_tensors)[1:-1]
    groups = {(g.start, g.end): g for g in graph.split_groups(constraints.dominance)}
    values = []
    assert constraints.slices is not None
    for cuts in itertools.combinations(inner, constraints.slices - 1):
        bounds = [0, *cuts, len(graph)]
        options = [coster.options(next(sweep(graph, a, [b])), groups.get((a, b))) for a, b in zip(bounds, bounds[1:])]
        values += [_plan_value(list(choice), constraints.objective) for choice in itertools.product(*options)]
    return min(values)


def test_more_slices_than_the_model_can_be_cut_into_says_so() -> None:
    graph = random_dag(11, 4)
    with pytest.raises(PlanError, match="no plan of exactly 9 slices"):
        plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(slices=9))


def test_parts_beyond_the_cores_take_turns() -> None:
    """Sub-slices run at once only on as many cores as there are: on one core a 2-way split is
    never faster than the slice whole; with a core each it is."""
    nodes = [Node("conv", "Conv", ("x",), ("y",), ("w",), 40.0, {"group": 1}, ("x", "w"))]
    shapes = {"x": (1, 16, 8, 8), "y": (1, 64, 8, 8)}
    sizes = {"x": 10_000, "y": 10_000}
    graph = Graph(
        "conv", nodes, sizes, {"w": 200 * MB}, ["x"], ["y"], weight_shapes={"w": (64, 16, 3, 3)}, tensor_shapes=shapes
    )
    (group,) = graph.split_groups(0.05)
    stats = next(sweep(graph, 0, [1]))
    latency = {}
    for cores in (None, 1, 2):
        coster = Coster(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="latency", cores=cores))
        whole, split = coster.option(stats), coster.option(stats, 2, group)
        assert whole is not None and split is not None
        latency[cores] = (whole.latency_ms, split.latency_ms)
    assert latency[None][1] < 0.6 * latency[None][0]
    assert latency[2] == latency[None]
    assert latency[1][1] >= latency[1][0]
    one_core = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(objective="latency", cores=1))
    assert [o.parts for o in one_core.slices] == [1]


def test_pre_packing_is_chosen_per_slice_by_its_cost() -> None:
    """A slice pre-packs when that buys time, and does not where it only costs memory."""
    base = [Node(f"n{i}", "MatMul", (f"t{i - 1}" if i else "x",), (f"t{i}",), (f"w{i}",), 20.0) for i in range(2)]
    weights = {"w0": 50 * MB, "w1": 300 * MB}
    sizes = {"x": 1000, "t0": 1000, "t1": 1000}
    # n0 runs much slower unpacked and packs for free; n1 packs 300 MB more for no time.
    nodes = [
        Node(**{**base[0].__dict__, "latency_unpacked_ms": 35.0, "packed_bytes": 0}),
        Node(**{**base[1].__dict__, "latency_unpacked_ms": 20.0, "packed_bytes": 300 * MB}),
    ]
    graph = Graph("packing", nodes, sizes, weights, ["x"], ["t1"])
    result = plan(graph, MEMORY, LINK, pricing.LAMBDA_FLAT, Constraints(slices=2))
    assert [o.prepack for o in result.slices] == [True, False]


def test_no_plan_passes_the_attainable_limit() -> None:
    from mopar.plan.limit import attainable

    for seed in range(6):
        graph = random_dag(seed, 8)
        for table in (pricing.LAMBDA_FLAT, pricing.KUBERNETES):
            bound = attainable(graph, MEMORY, table, max_cpu=2.0)
            for objective in ("cost", "latency"):
                result = plan(graph, MEMORY, LINK, table, Constraints(objective=objective, max_cpu=2.0))
                resources = sum(o.cost_usd - o.parts * table.request_usd for o in result.slices)
                assert resources >= bound.usd * (1 - 1e-9)
                assert bound.saving >= 1.0
