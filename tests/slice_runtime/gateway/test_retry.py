"""The retry policy's backoff (pure): bounded, growing, and jittered so retries spread out."""

from __future__ import annotations

from slice_runtime.gateway.core import RetryPolicy


def test_delays_are_jittered_within_their_bounds() -> None:
    policy = RetryPolicy(attempts=5, first_delay=0.1, factor=3.0, max_delay=3.0, jitter=0.5)
    ceilings = [0.1, 0.3, 0.9, 2.7]
    draws = [list(policy.delays()) for _ in range(50)]
    for delays in draws:
        assert len(delays) == 4
        for delay, ceiling in zip(delays, ceilings):
            assert ceiling * 0.5 <= delay <= ceiling
    assert len({tuple(d) for d in draws}) == 50  # no two clients back off in step


def test_no_jitter_gives_the_plain_exponential() -> None:
    assert list(RetryPolicy(attempts=4, first_delay=0.1, factor=2.0, max_delay=0.3, jitter=0.0).delays()) == [
        0.1,
        0.2,
        0.3,
    ]
