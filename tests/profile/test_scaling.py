"""Thread scaling: the counts profiled, Amdahl's fit and the times it predicts (plain values)."""

from __future__ import annotations

import pytest

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
