"""Timing helpers shared by the benchmarks: medians of repeated runs, ratios, one line each."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(
    fn: Callable[[], object], *, repeats: int = 3, setup: Callable[[], object] | None = None
) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs; ``setup()`` runs untimed before each."""
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(
    label: str, ours: float, baseline: float, baseline_name: str, goal: float | None = None
) -> bool:
    """Print one comparison line; return whether the goal (ratio baseline/ours) is met."""
    ratio = baseline / ours
    met = goal is None or ratio >= goal
    goal_text = "" if goal is None else f"  goal >= {goal:g}x: {'met' if met else 'NOT met'}"
    # a slower result reads as "1.5x the time of", never as "0.7x faster than"
    comparison = f"{ratio:8.1f}x faster than" if ratio >= 1 else f"{1 / ratio:8.2f}x the time of"
    if goal is not None and goal < 1:
        goal_text = f"  goal <= {1 / goal:g}x the time: {'met' if met else 'NOT met'}"
    print(
        f"{label:<48} {comparison} {baseline_name}"
        f"  (ours {ours * 1e3:9.1f} ms, baseline {baseline * 1e3:9.1f} ms){goal_text}",
        flush=True,
    )
    return met
