"""What the masks buy: bytes per storage format and measured speed."""

from __future__ import annotations

import math
from collections.abc import Mapping

import plotly.graph_objects as go

from ._style import _EMPTY, _KEPT, _REFERENCE, _title
from .curves import _frame


def size_bars(sizes: Mapping[str, float], *, title: str | None = None) -> go.Figure:
    """Bytes of one model stored in different ways, as bars with the ratio to the first.

    Args:
        sizes: ``{label: bytes}``, the reference (usually ``"dense"``) first, e.g. built from
            :func:`prunelab.analysis.storage.compression` plus the shrunk model's bytes.
        title: Main title.

    Returns:
        A Figure with one Bar trace "bytes" (in KB); each bar's text is its ratio to the first.

    Raises:
        ValueError: No sizes, or a size that is not a positive number.

    >>> fig = size_bars({"dense": 4000, "bitmask": 525})
    >>> list(fig.data[0].text)
    ['1.00x', '7.62x smaller']
    """
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError("sizes must be a non-empty mapping of label -> bytes")
    labels = [str(k) for k in sizes]
    values = [float(v) for v in sizes.values()]
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"sizes must be positive numbers of bytes, got {dict(sizes)}")
    reference = values[0]
    text = ["1.00x"] + [
        f"{reference / v:.2f}x smaller" if v < reference else f"{v / reference:.2f}x larger"
        for v in values[1:]
    ]
    colours = [_REFERENCE] + [_KEPT if v < reference else _EMPTY for v in values[1:]]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[v / 1024 for v in values],
            text=text,
            textposition="outside",
            marker_color=colours,
            name="bytes",
            customdata=values,
            hovertemplate="%{x}<br>%{customdata:,.0f} bytes<extra></extra>",
        )
    )
    fig.update_layout(
        title=_title(title or "Model size by storage format", [f"ratios vs {labels[0]}"])
    )
    fig.update_yaxes(title_text="size (KB)", rangemode="tozero")
    return fig


def speed_bars(report: object, *, title: str | None = None) -> go.Figure:
    """Measured latency relative to dense, per variant and batch size, from a speed report.

    Args:
        report: The DataFrame of :func:`prunelab.analysis.speed.speed_report` (variant, batch,
            median_ms, ratio_vs_dense).
        title: Main title.

    Returns:
        A Figure with one Bar trace per variant (x: batch size, y: time / dense time) and a
        dashed line at 1 (as fast as dense; below is faster).

    >>> import pandas as pd
    >>> table = pd.DataFrame({"variant": ["dense", "shrunk"], "batch": [1, 1],
    ...                       "median_ms": [2.0, 1.0], "ratio_vs_dense": [1.0, 0.5]})
    >>> [(t.name, list(t.y)) for t in speed_bars(table).data]
    [('dense', [1.0]), ('shrunk', [0.5])]
    """
    table = _frame(report, ["variant", "batch", "median_ms", "ratio_vs_dense"])
    palette = {"dense": _REFERENCE, "masked": "#f28e2b", "shrunk": _KEPT}
    fig = go.Figure()
    for variant in table["variant"].unique():
        rows = table[table["variant"] == variant]
        fig.add_trace(
            go.Bar(
                x=[f"batch {b}" for b in rows["batch"]],
                y=rows["ratio_vs_dense"].astype(float).tolist(),
                name=str(variant),
                marker_color=palette.get(str(variant)),
                customdata=rows["median_ms"].astype(float).to_numpy(),
                text=[f"{r:.2f}x" for r in rows["ratio_vs_dense"]],
                textposition="outside",
                hovertemplate=(
                    f"{variant}<br>%{{x}}<br>%{{customdata:.3f}} ms "
                    "(%{y:.2f}x dense)<extra></extra>"
                ),
            )
        )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="as fast as dense")
    fig.update_layout(
        title=_title(title or "Measured latency vs dense", ["median time; below 1 is faster"]),
        barmode="group",
    )
    fig.update_yaxes(title_text="time / dense time", rangemode="tozero")
    return fig
