"""A transformer's sensitivity read per block and projection: a block x projection heatmap."""

from __future__ import annotations

import plotly.graph_objects as go

from ._style import _title
from .curves import _metric_words, _unit

__all__ = ["block_heatmap"]

_ORDER = ("q", "k", "v", "qkv", "o", "up", "gate", "down")  # attention, then the MLP


def block_heatmap(
    table: object, *, sparsity: float | None = None, value: str = "drop"
) -> go.Figure:
    """Block x projection heatmap of a transformer's sensitivity table at one sparsity.

    Needs the ``block`` and ``projection`` columns that :func:`prunelab.sensitivity` adds for
    a model with a repeated-block stack (layers outside it, block -1, are left out).

    Args:
        table: A sensitivity table (DataFrame).
        sparsity: The level shown (default: the one nearest 50%).
        value: Column to colour by (``drop`` by default).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"block": [0, 0, 1, 1], "projection": ["qkv", "o"] * 2,
    ...                    "sparsity": [0.5] * 4, "drop": [0.1, 0.2, 0.3, 0.4]})
    >>> fig = block_heatmap(df)
    >>> list(fig.data[0].x), fig.data[0].z.tolist()
    (['qkv', 'o'], [[0.1, 0.2], [0.3, 0.4]])
    """
    import pandas as pd

    frame = pd.DataFrame(table)
    missing = [c for c in ("block", "projection", "sparsity", value) if c not in frame]
    if missing:
        raise ValueError(
            f"block_heatmap needs columns {', '.join(missing)}: a sensitivity table of a model "
            "with a repeated-block stack (a transformer) has them"
        )
    frame = frame[frame["block"] >= 0]
    if frame.empty:
        raise ValueError("no layer of the table is inside a block stack")
    levels = sorted(frame["sparsity"].unique())
    level = min(levels, key=lambda s: abs(s - (0.5 if sparsity is None else sparsity)))
    frame = frame[frame["sparsity"] == level]
    grid = frame.pivot_table(index="block", columns="projection", values=value, dropna=False)
    known = [p for p in _ORDER if p in grid.columns]
    grid = grid[known + sorted(c for c in grid.columns if c not in _ORDER)]
    words = _metric_words(value, table)
    scale, unit = _unit(value, table)
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy() * scale,
            x=[str(c) for c in grid.columns],
            y=[f"block {b}" for b in grid.index],
            colorscale="Reds",
            hovertemplate="%{y}, %{x}<br>"
            + words
            + (f" %{{z:.2f}}{unit}" if unit else " %{z:.4f}")
            + "<extra></extra>",
        )
    )
    notes = [f"each layer pruned alone to {level:.0%}", "qkv: GPT-2's fused q, k, v (c_attn)"]
    fig.update_layout(
        title=_title(f"{words.capitalize()} per block and projection", notes),
        xaxis_title="projection",
        yaxis={"title": "block", "autorange": "reversed"},
    )
    return fig
