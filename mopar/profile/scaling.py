"""How a node's time scales with onnxruntime's intra-op threads (pure).

The profile measures each node at a few thread counts (`thread_counts`); Amdahl's law,
t(n) = t1 * (s + (1 - s) / n), fitted to those times gives the serial fraction `s` that
predicts the counts not measured (`time_at`).
"""

from __future__ import annotations

from collections.abc import Mapping

# Beyond 1, more threads are slower (threads that cost more than they gain on a small node);
# the bound keeps one noisy measurement from predicting absurd times.
MAX_FRACTION = 2.0
_TINY_MS = 1e-6


def thread_counts(max_threads: int) -> list[int]:
    """The counts profiled: 1, 2, 4, … below `max_threads`, and `max_threads` itself."""
    if max_threads < 1:
        raise ValueError(f"max_threads must be at least 1, got {max_threads}")
    counts = []
    n = 1
    while n < max_threads:
        counts.append(n)
        n *= 2
    return [*counts, max_threads]


def serial_fraction(times: Mapping[int, float]) -> float:
    """Amdahl's serial fraction, least squares over the measured {threads: ms}, in [0, 2];
    1.0 (no gain from threads) where nothing beyond one thread was measured."""
    t1 = times.get(1, 0.0)
    if len(times) < 2 or t1 <= _TINY_MS:
        return 1.0
    # t(n) - t1/n = s * t1 * (1 - 1/n): a line through the origin in s.
    across = along = 0.0
    for n, ms in times.items():
        slope = t1 * (1.0 - 1.0 / n)
        across += slope * (ms - t1 / n)
        along += slope * slope
    if along <= 0.0:
        return 1.0
    return min(max(across / along, 0.0), MAX_FRACTION)


def time_at(times: Mapping[int, float], fraction: float, threads: int) -> float:
    """The time at `threads`: as measured where it was, otherwise Amdahl's from one thread."""
    if threads in times:
        return times[threads]
    return times[1] * (fraction + (1.0 - fraction) / threads)
