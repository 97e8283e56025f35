"""Curves and tables of sweeps: metric against sparsity, and per-layer sensitivity."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ..runtime.metrics import LOWER_IS_BETTER
from ._style import _title

_METRIC_TITLES = {
    "accuracy": "accuracy",
    "loss": "mean loss",
    "agreement": "top-1 agreement with the dense model",
    "kl": "KL(dense || pruned)",
    "perplexity": "perplexity",
    "energy_removed": "share of the weights' energy removed",
}
_MANY_CURVES = 10  # above this, curves take colours in model order and the legend moves below


SHARE_METRICS = ("accuracy", "agreement", "energy_removed")  # in [0, 1]: drawn as percent


def _metric_words(metric: str, table: object = None) -> str:
    """Plain words for a metric column; a drop says of which metric (table.attrs["metric"])."""
    if metric == "drop":
        base = getattr(table, "attrs", {}).get("metric")
        if base == "energy_removed":  # the data-free drop is the share removed itself
            return _METRIC_TITLES[base]
        if not base:
            return "drop"
        change = "rise" if base in LOWER_IS_BETTER else "drop"  # lower is better: a rise hurts
        return f"{change} in {_METRIC_TITLES.get(base, base)}"
    return _METRIC_TITLES.get(metric, metric)


def _unit(metric: str, table: object = None) -> tuple[float, str]:
    """(scale, unit) of a metric column: shares in percent, drops of shares in points."""
    if metric in SHARE_METRICS:
        return 100.0, "%"
    base = getattr(table, "attrs", {}).get("metric")
    if metric == "drop" and base in SHARE_METRICS:
        return 100.0, "%" if base == "energy_removed" else " points"
    return 1.0, ""


def _curve_name(name: object) -> str:
    # a layer's curve is named by its module: ".weight" repeats on every entry of the legend
    text = str(name)
    return text.removesuffix(".weight") if text.endswith(".weight") else text


def _many_curves_legend(fig: go.Figure, count: int) -> None:
    """Many curves (a model's layers): no legend, which would not fit, but colours in model
    order with a colour bar from the first layer to the last; hover names each curve."""
    import plotly.colors

    if count <= _MANY_CURVES:
        return
    colours = plotly.colors.sample_colorscale("Viridis", [i / (count - 1) for i in range(count)])
    names = [trace.name for trace in fig.data]
    for trace, colour in zip(fig.data, colours, strict=True):
        trace.line.color = trace.marker.color = colour
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name="layer order",
            showlegend=False,
            hoverinfo="skip",
            marker={
                "color": [0, count - 1],
                "colorscale": "Viridis",
                "cmin": 0,
                "cmax": count - 1,
                "showscale": True,
                "colorbar": {
                    "title": {"text": f"{count} layers,<br>in model order"},
                    "tickvals": [0, count - 1],
                    "ticktext": [names[0], names[-1]],
                    "thickness": 12,
                },
            },
        )
    )
    fig.update_layout(showlegend=False)


def sparsity_curves(
    table: object, *, metric: str = "accuracy", by: str = "strategy", title: str | None = None
) -> go.Figure:
    """Metric-vs-sparsity curves, one line per strategy (``prunelab.sweeps.sweep``'s table) or
    per layer (``by="layer"`` on a sensitivity table).

    Args:
        table: A DataFrame with columns ``by``, ``sparsity`` and ``metric``.
        metric: Which column to plot: accuracy, loss, agreement, kl, drop, ...
        by: The column that names each curve.
        title: Main title.

    Returns:
        A Figure with one Scatter trace (lines and markers) per curve, named after it (a
        layer's ".weight" left out). With more than 10 curves (a model's layers), colours run
        from dark to light in table order, a colour bar (one more trace, "layer order") names
        the first and the last, the legend is hidden and hovering a curve names it.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"strategy": ["a", "a"], "sparsity": [0.0, 0.5], "accuracy": [0.9, 0.8]})
    >>> [t.name for t in sparsity_curves(df).data]
    ['a']
    """
    frame = _frame(table, (by, "sparsity", metric))
    scale, unit = _unit(metric, table)
    fig = go.Figure()
    label = _metric_words(metric, table)
    for name, rows in frame.groupby(by, sort=False):
        rows = rows.sort_values("sparsity")
        fig.add_trace(
            go.Scatter(
                x=(rows["sparsity"] * 100).tolist(),
                y=(rows[metric] * scale).tolist(),
                mode="lines+markers",
                name=_curve_name(name),
                hovertemplate=f"{name}<br>sparsity %{{x:.1f}}%<br>{label} "
                f"%{{y:.{'2f' if unit else '3g'}}}{unit}<extra></extra>",
            )
        )
    many = len(fig.data) > _MANY_CURVES
    _many_curves_legend(fig, len(fig.data))
    notes = ["hover a curve for its layer" if many else None]
    fig.update_layout(title=_title(title or f"{label[0].upper() + label[1:]} vs sparsity", notes))
    fig.update_xaxes(title_text="sparsity (% of weights zeroed)", range=[0, 100])
    fig.update_yaxes(title_text=label + (f" ({unit.strip()})" if unit else ""))
    return fig


def _frame(table: object, columns: Sequence[str]):
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"table lacks column(s) {missing}; it needs {', '.join(columns)} "
            f"(have {list(table.columns)})"
        )
    if table.empty:
        raise ValueError("table is empty; there is nothing to plot")
    return table


def _colour_title(value: str, metric: str | None) -> str:
    if metric == "energy_removed" and value in ("drop", metric):
        return "removed"
    if value == "drop":
        return "rise" if metric == "perplexity" else "drop"
    return _metric_words(value)


def sensitivity_heatmap(
    table: object, *, value: str = "drop", title: str | None = None
) -> go.Figure:
    """Layer x sparsity heatmap of a sensitivity table (``prunelab.sweeps.curves.sensitivity``).

    Cells show how much worse the metric gets when only that layer is pruned to that
    sparsity; skipped (early-stopped) points are blank.

    Args:
        table: A DataFrame with layer, sparsity and ``value`` columns.
        value: Column to colour by (``drop`` by default).
        title: Main title.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"layer": ["a", "a", "b", "b"], "sparsity": [0.5, 0.9] * 2,
    ...                    "drop": [0.0, 0.1, 0.2, 0.5]})
    >>> fig = sensitivity_heatmap(df)
    >>> list(fig.data[0].y), fig.data[0].z.tolist()
    (['a', 'b'], [[0.0, 0.1], [0.2, 0.5]])
    """
    frame = _frame(table, ("layer", "sparsity", value))
    grid = frame.pivot_table(index="layer", columns="sparsity", values=value, dropna=False)
    grid = grid.reindex(list(dict.fromkeys(frame["layer"])))
    metric = getattr(table, "attrs", {}).get("metric")
    words = _metric_words(value, table)
    scale, unit = _unit(value, table)
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy() * scale,
            x=[f"{s:.0%}" for s in grid.columns],
            y=list(grid.index),
            colorscale="Reds",
            zmin=0,
            colorbar={
                "title": _colour_title(value, metric) + (f" ({unit.strip()})" if unit else "")
            },
            hovertemplate="%{y} at %{x}<br>"
            + words
            + (f" %{{z:.2f}}{unit}" if unit else " %{z:.4f}")
            + "<extra></extra>",
        )
    )
    notes = [f"{words} when only that layer is pruned" if metric else None]
    if metric == "energy_removed":
        notes = ["no data: the share of each layer's sum of w² that pruning removes"]
    fig.update_layout(
        title=_title(title or "Per-layer sensitivity", notes),
        height=max(320, 26 * len(grid) + 160),
    )
    fig.update_xaxes(title_text="sparsity of the layer", type="category")
    fig.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return fig
