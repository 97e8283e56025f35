"""Attention heads: a heads x layers heatmap of head importance, pruned heads marked."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from ._style import _PRUNED, _title, _to_numpy

__all__ = ["head_importance_map"]


def _short(name: str) -> str:
    """``encoder.layers.encoder_layer_3.self_attention`` -> ``encoder_layer_3.self_attention``:
    the last two parts name a layer and stay readable on the axis."""
    return ".".join(name.split(".")[-2:]) or "(model)"


def head_importance_map(
    importance: Mapping[str, object],
    kept: Mapping[str, object] | None = None,
    *,
    title: str | None = None,
    score: str = "importance",
) -> go.Figure:
    """Heads x layers heatmap of head importance, with pruned heads crossed out.

    Args:
        importance: ``{attention layer: one score per head}`` (e.g.
            :func:`prunelab.core.heads.head_importance`); layers may have different head counts.
        kept: ``{attention layer: bool per head}`` (True = kept), e.g. from
            :func:`prunelab.core.heads.heads_of`; None draws no marks.
        title: Main title.
        score: What the scores are, for the colour bar, the hover text and the subtitle
            (e.g. ``"weight L2 norm"`` for head-magnitude, ``"|dL/d gate|"`` for head-taylor).

    >>> import torch
    >>> kept = {"l0": torch.tensor([True, False])}
    >>> fig = head_importance_map({"l0": torch.tensor([1.0, 2.0])}, kept)
    >>> fig.data[0].z.tolist(), list(fig.data[1].x)
    ([[1.0, 2.0]], [1])
    >>> fig = head_importance_map({"l0": torch.tensor([1.0])}, score="|dL/d gate|")
    >>> fig.data[0].colorbar.title.text
    '|dL/d gate|'
    """
    names = list(importance)
    if not names:
        raise ValueError("head_importance_map needs at least one attention layer")
    scores = [_to_numpy(importance[n], what=f"importance of {n}").astype(float) for n in names]
    width = max(len(s) for s in scores)
    grid = np.full((len(names), width), np.nan)
    for row, values in enumerate(scores):
        grid[row, : len(values)] = values
    labels = [_short(n) for n in names]
    if len(set(labels)) < len(labels):
        labels = names
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=list(range(width)),
            y=labels,
            colorscale="Blues",
            colorbar={"title": score},
            hovertemplate=f"%{{y}}, head %{{x}}<br>{score} %{{z:.4g}}<extra></extra>",
        )
    )
    pruned_total = 0
    if kept is not None:
        xs, ys = [], []
        for row, name in enumerate(names):
            mask = _to_numpy(kept[name], what=f"kept heads of {name}").astype(bool)
            for head in np.flatnonzero(~mask):
                xs.append(int(head))
                ys.append(labels[row])
        pruned_total = len(xs)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                marker={"symbol": "x-thin", "size": 14, "line": {"width": 3, "color": _PRUNED}},
                name="pruned head",
                hovertemplate="%{y}, head %{x}: pruned<extra></extra>",
            )
        )
    total = int(np.isfinite(grid).sum())
    note = f"{pruned_total} of {total} heads pruned (crossed)" if kept is not None else None
    shown = None if score == "importance" else f"colour: {score}"
    fig.update_layout(
        title=_title(title or "Attention heads", [shown, note]),
        height=max(260, 28 * len(names) + 140),
        showlegend=False,
    )
    fig.update_xaxes(title_text="head", dtick=1, range=[-0.5, width - 0.5])
    fig.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return fig
