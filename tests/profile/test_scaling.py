"""Thread scaling: the counts profiled, Amdahl's fit and the times it predicts (plain values)."""

from __future__ import annotations

import json

import pytest

from mopar.model.modelfile import load_model
from mopar.profile.profiler import NodeProfile, Profile, profile_model
from mopar.profile.scaling import serial_fraction, thread_counts, time_at


def _amdahl(t1: float, s: float, counts: list[int]) -> dict[int, float]:
    return {n: t1 * (s + (1 - s) / n) for n in counts}


def test_thread_counts_are_powers_of_two_below_the_maximum_and_the_maximum() -> None:
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [1, 2]
    assert thread_counts(6) == [1, 2, 4, 6]
    assert thread_counts(8) == [1, 2, 4, 8]
    assert thread_counts(16) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError):
        thread_counts(0)


@pytest.mark.parametrize("s", [0.0, 0.3, 1.0])
def test_the_fit_recovers_the_serial_fraction_of_amdahl_data(s: float) -> None:
    assert serial_fraction(_amdahl(12.0, s, [1, 2, 4, 8])) == pytest.approx(s)
    assert serial_fraction(_amdahl(12.0, s, [1, 2])) == pytest.approx(s)


def test_the_fit_is_least_squares_over_noisy_times() -> None:
    # Two threads at 0.6 of one (s = 0.2), four at 0.45 (s = 0.2667): between the two, nearer four's.
    s = serial_fraction({1: 10.0, 2: 6.0, 4: 4.5})
    assert 0.2 < s < 0.2667
    assert s == pytest.approx((5 * 1.0 + 7.5 * 2.0) / (5**2 + 7.5**2))


def test_the_fit_is_clipped_to_zero_and_two() -> None:
    assert serial_fraction({1: 10.0, 2: 4.0}) == 0.0  # faster than linear: no negative fraction
    assert serial_fraction({1: 10.0, 2: 12.0}) == pytest.approx(1.4)  # slower with threads: above 1
    assert serial_fraction({1: 10.0, 2: 40.0}) == 2.0


def test_one_count_or_no_time_means_no_gain_from_threads() -> None:
    assert serial_fraction({1: 10.0}) == 1.0
    assert serial_fraction({1: 0.0, 2: 0.0}) == 1.0
    assert serial_fraction({}) == 1.0


def test_time_at_is_measured_where_measured_and_amdahl_elsewhere() -> None:
    times = {1: 10.0, 2: 6.0, 4: 4.5}
    assert time_at(times, 0.25, 2) == 6.0  # measured, not the fit's 6.25
    assert time_at(times, 0.25, 4) == 4.5
    assert time_at(times, 0.25, 8) == pytest.approx(10.0 * (0.25 + 0.75 / 8))
    assert time_at(times, 0.25, 3) == pytest.approx(10.0 * (0.25 + 0.75 / 3))
    assert time_at({1: 10.0}, 1.0, 16) == 10.0


def _node(name: str, by_threads: dict[int, float], fraction: float) -> NodeProfile:
    return NodeProfile(name, "Conv", by_threads[1], 0, 0, None, latency_by_threads=by_threads, serial_fraction=fraction)


def _profile(nodes: list[NodeProfile], wall: dict[int, float]) -> Profile:
    return Profile(
        model={"name": "m", "sha256": "0" * 64, "file": "m.onnx"},
        machine={"threads": 1, "optimization": "all", "thread_counts": sorted(wall)},
        settings={"runs": 1, "warmup": 0},
        inputs=[],
        outputs=[],
        nodes=nodes,
        totals={"latency_ms": wall[1], "latency_by_threads_ms": {str(n): ms for n, ms in wall.items()}},
    )


def test_node_latency_at_uses_its_measurements_then_its_fit() -> None:
    node = _node("conv", {1: 8.0, 2: 5.0}, 0.25)
    assert node.latency_at(1) == 8.0 and node.latency_at(2) == 5.0
    assert node.latency_at(4) == pytest.approx(8.0 * (0.25 + 0.75 / 4))
    unscaled = NodeProfile("relu", "Relu", 3.0, 0, 0, None)  # built without the scaling fields
    assert unscaled.latency_at(1) == 3.0 and unscaled.latency_at(8) == 3.0


def test_the_whole_model_time_is_measured_where_measured_else_the_fit_scaled_to_the_wall_time() -> None:
    # Nodes sum to 10 ms at one thread, 6 at two and 4 at four (by their fits); the wall
    # time at two threads, 7 ms, carries the session's own overhead along.
    nodes = [_node("a", {1: 8.0, 2: 4.0}, 0.0), _node("b", {1: 2.0, 2: 2.0}, 1.0)]
    profile = _profile(nodes, {1: 11.0, 2: 7.0})
    assert profile.thread_counts == [1, 2]
    assert profile.whole_latency_ms(1) == 11.0 and profile.whole_latency_ms(2) == 7.0
    assert profile.whole_latency_ms(4) == pytest.approx(7.0 * (2.0 + 2.0) / (4.0 + 2.0))


def test_scaling_round_trips_through_json_with_string_keys() -> None:
    profile = _profile([_node("a", {1: 8.0, 2: 4.5}, 0.125)], {1: 9.0, 2: 5.0})
    data = json.loads(json.dumps(profile.to_json()))
    assert data["nodes"][0]["latency_by_threads"] == {"1": 8.0, "2": 4.5}
    assert data["nodes"][0]["serial_fraction"] == 0.125
    assert data["totals"]["latency_by_threads_ms"] == {"1": 9.0, "2": 5.0}
    assert data["machine"]["thread_counts"] == [1, 2]
    again = Profile.from_json(data)
    assert again.to_json() == profile.to_json()
    assert again.nodes[0].latency_by_threads == {1: 8.0, 2: 4.5}


def test_a_profile_from_before_thread_scaling_reads_as_one_thread() -> None:
    profile = _profile([_node("a", {1: 8.0}, 1.0)], {1: 9.0})
    data = profile.to_json()
    del data["machine"]["thread_counts"], data["totals"]["latency_by_threads_ms"]
    for node in data["nodes"]:
        del node["latency_by_threads"], node["serial_fraction"]
    old = Profile.from_json(data)
    assert old.thread_counts == [1]
    assert old.nodes[0].latency_by_threads == {1: 8.0} and old.nodes[0].serial_fraction == 1.0
    assert old.nodes[0].latency_at(4) == 8.0
    assert old.whole_latency_ms(1) == 9.0 and old.whole_latency_ms(4) == 9.0


def test_a_real_profile_at_two_threads_measures_every_node_at_one_and_two(small_model) -> None:
    model = load_model(small_model("mobilenetv2"))
    profile = profile_model(
        model, runs=2, warmup=1, measure_memory=False, measure_compression=False, measure_splits=False, max_threads=2
    )
    assert profile.thread_counts == [1, 2]
    assert set(profile.totals["latency_by_threads_ms"]) == {"1", "2"}
    assert profile.totals["latency_by_threads_ms"]["1"] == profile.totals["latency_ms"]
    for node in profile.nodes:
        assert sorted(node.latency_by_threads) == [1, 2]
        assert node.latency_by_threads[1] == node.latency_ms
        assert 0.0 <= node.serial_fraction <= 2.0
