"""The open-loop 'sustained' figure: the highest rate served in full within the p99 goal."""

from __future__ import annotations

from bench.compare import sustained


def _point(offered: float, achieved: float, p99: float) -> dict[str, float]:
    return {"offered_per_second": offered, "achieved_per_second": achieved, "p99_ms": p99}


def test_the_highest_rate_served_in_full_within_the_goal_counts() -> None:
    curve = [
        _point(1000, 995, 20),
        _point(2000, 1990, 49.9),
        _point(3000, 2990, 73),  # too slow
        _point(4000, 3000, 40),  # not served in full
    ]
    assert sustained(curve) == 1990


def test_no_point_within_the_goal_is_zero() -> None:
    assert sustained([_point(1000, 999, 51)]) == 0.0
    assert sustained([]) == 0.0
