"""One way to write numbers on every page: accuracy and other shares as percent."""

from __future__ import annotations


def percent(value: float) -> str:
    """A share in [0, 1] as a percent with two decimals: ``percent(0.98) == "98.00%"``."""
    return f"{value:.2%}"


def points(change: float) -> str:
    """A change of a share, in percentage points: ``points(-0.2089) == "-20.89 points"``.

    Not "%": a drop from 98% to 77% is 21 points, which "-21%" would read as a relative drop.
    """
    return f"{change * 100:+.2f} points"
