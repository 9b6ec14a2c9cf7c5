"""The link model decides each tensor's codec and level from the link's throughput and the
tensor's measured compressibility: compression where the link is slow, none on loopback; and it
prices a codec forced on every tensor the way the workers then move them."""

from __future__ import annotations

import dataclasses

import pytest

from mopar.model.modelfile import load_model
from mopar.plan import graph as graphs
from mopar.plan import pricing
from mopar.plan.linkmodel import CodecSpeed, LinkModel
from mopar.plan.memory import MB, MemoryModel
from mopar.plan.planner import Constraints, Coster, plan
from mopar.plan.segments import sweep
from mopar.profile.profiler import profile_model
from slice_runtime.codec import CANDIDATES

# Measured by `mopar calibrate` on this machine (two cores): codec speeds, and the store across a
# 200 Mbit/s link (tc tbf, network namespaces) and over loopback.
SPEEDS = {
    "zstd-5": CodecSpeed(660_000, 1_490_000),
    "zstd1": CodecSpeed(390_000, 900_000),
    "zstd3": CodecSpeed(250_000, 1_120_000),
    "zstd-5+shuffle": CodecSpeed(540_000, 810_000),
    "zstd1+shuffle": CodecSpeed(350_000, 630_000),
    "zstd3+shuffle": CodecSpeed(200_000, 570_000),
}
SLOW = LinkModel(hop_ms=0.08, bytes_per_ms=23_800, invoke_ms=0.6, codecs=SPEEDS)
LOOPBACK = LinkModel(hop_ms=0.08, bytes_per_ms=1_300_000, invoke_ms=0.6, codecs=SPEEDS)
# A ReLU output's ratios as the profile measures them (half zeros): 1.6 MB.
RELU = {"none": 0.9999, "zstd-5": 1.42, "zstd1": 1.78, "zstd3": 1.83, "zstd-5+shuffle": 1.28,
        "zstd1+shuffle": 1.76, "zstd3+shuffle": 1.65}  # fmt: skip
SIZE = 64 * 80 * 80 * 4


def _time(link: LinkModel, name: str) -> float:
    moved = dataclasses.replace(link, codec=name).transfer(SIZE, RELU)
    return moved.write_ms + moved.read_ms


def test_a_slow_link_compresses_with_the_fastest_setting_and_loopback_does_not() -> None:
    slow, loopback = SLOW.transfer(SIZE, RELU), LOOPBACK.transfer(SIZE, RELU)
    assert loopback.setting.name == "none" and loopback.wire_bytes == SIZE
    assert slow.setting.name != "none" and slow.wire_bytes < SIZE / 1.4
    # The choice is the fastest of every setting, level and shuffle included.
    assert slow.setting.name == min((s.name for s in CANDIDATES), key=lambda name: _time(SLOW, name))
    assert slow.write_ms + slow.read_ms < 0.7 * _time(SLOW, "none")  # ~140 ms saved of ~270
    assert _time(LOOPBACK, "zstd1") > 2 * _time(LOOPBACK, "none")  # on loopback zstd only costs


def test_a_forced_codec_is_priced_as_the_workers_move_it() -> None:
    forced = dataclasses.replace(LOOPBACK, codec="zstd1")
    moved = forced.transfer(SIZE, RELU)
    assert moved.setting.name == "zstd1" and moved.wire_bytes == int(SIZE / RELU["zstd1"])
    assert moved.write_ms == pytest.approx(SIZE / 390_000 + moved.wire_bytes / 1_300_000)
    assert moved.read_ms == pytest.approx(moved.wire_bytes / 1_300_000 + SIZE / 900_000)
    assert forced.transfer(1000, RELU).setting.name == "none"  # under the threshold frames go raw
    incompressible = forced.transfer(SIZE, {"zstd1": 0.99})
    assert incompressible.wire_bytes == SIZE and incompressible.write_ms > SIZE / 1_300_000  # encoded in vain
    assert dataclasses.replace(SLOW, codec="none").transfer(SIZE, RELU).setting.name == "none"
    with pytest.raises(ValueError, match="zstd9"):
        dataclasses.replace(SLOW, codec="zstd9").transfer(SIZE, RELU)


def test_the_codec_policy_round_trips_through_json() -> None:
    forced = dataclasses.replace(SLOW, codec="zstd-5", inline_bytes=0)
    assert LinkModel.from_json(forced.to_json()) == forced
    assert LinkModel.from_json({k: v for k, v in SLOW.to_json().items() if k != "codec"}).codec == "auto"


def test_the_plan_prices_its_cuts_with_the_link(small_model) -> None:  # type: ignore[no-untyped-def]
    model = load_model(small_model("resnet50"))
    profile = profile_model(model, runs=1, measure_memory=False, measure_splits=False)
    graph = graphs.from_model(model.proto, profile)
    relus = [t for t, size in graph.tensor_bytes.items() if t.endswith("Relu_output_0") and size >= 32 * 1024]
    assert relus
    for tensor in relus:  # measured compressible: zstd across the slow link, raw over loopback
        assert SLOW.transfer(graph.tensor_bytes[tensor], graph.ratios[tensor]).setting.name != "none"
        assert LOOPBACK.transfer(graph.tensor_bytes[tensor], graph.ratios[tensor]).setting.name == "none"
    free = pricing.Pricing(name="free", request_usd=0.0, gb_second_usd=1e-5, memory_min_mb=1)
    constraints = Constraints(objective="latency", slices=3, split=False)
    fast = plan(graph, MemoryModel(MB), LOOPBACK, free, constraints)
    assert {w.setting.name for o in fast.slices for w in o.writes.values()} == {"none"}
    # A cut after a ReLU, across each link: compressed across the slow one only.
    heads = (next(sweep(graph, 0, [p])) for p in graph.cut_positions(1)[1:-1])
    head = next(h for h in heads if set(h.outputs) <= set(relus))
    for link, compressed in ((SLOW, True), (LOOPBACK, False)):
        option = Coster(graph, MemoryModel(MB), link, free, constraints).option(head)
        assert option is not None and set(option.writes) == set(head.outputs)
        assert all((w.setting.name != "none") == compressed for w in option.writes.values()), link


def test_a_request_pays_the_gateways_own_handling_once() -> None:
    from dataclasses import replace

    from mopar.plan.graph import Graph, Node

    nodes = [Node(f"n{i}", "Relu", (f"t{i}",), (f"t{i + 1}",), latency_ms=10.0) for i in range(4)]
    graph = Graph("chain", nodes, {f"t{i}": 1000 for i in range(5)}, {}, ["t0"], ["t4"])
    link = LinkModel(hop_ms=0.1, bytes_per_ms=1_000_000, invoke_ms=0.5)
    handled = replace(link, request_ms=4.0)
    for constraints in (Constraints(objective="latency", slices=2), Constraints(objective="cost")):
        base = plan(graph, MemoryModel(MB), link, pricing.KUBERNETES, constraints)
        with_handling = plan(graph, MemoryModel(MB), handled, pricing.KUBERNETES, constraints)
        assert with_handling.latency_ms == pytest.approx(base.latency_ms + 4.0)
        assert [o.stats.end for o in with_handling.slices] == [o.stats.end for o in base.slices]
    assert LinkModel.from_json(handled.to_json()).request_ms == 4.0
