"""Lesson 1: what a mask is, and what pruning gains (size, operations) and costs (accuracy).

A *mask* is a bool tensor of a weight's shape, True where the weight is kept; pruning
multiplies the weight by it. :func:`toy_layer` is the lessons' small example layer and
:func:`toy_mask` its magnitude mask. :func:`gains` prunes a real model at every sparsity of
:data:`LEVELS` and tabulates what that buys (bytes stored in a sparse format, multiply-adds
that meet a kept weight) and what it costs (the metric on the data). :func:`gains_figure`
draws that table, and :func:`mark_sparsity` marks the student's sparsity on any curve figure
without recomputing it (the lessons' curves are computed once, the mark moves).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from ..analysis.flops import flops_by_layer, with_masks
from ..analysis.storage import compression
from ..core.pruner import Pruner, prune
from ..figures import sparsity_curves
from ..sweeps import sweep

__all__ = [
    "LEVELS",
    "TOY_WEIGHT",
    "gains",
    "gains_figure",
    "mark_sparsity",
    "marked_curves",
    "shown_metric",
    "toy_layer",
    "toy_mask",
]

# the lessons' sparsity grid (0%, 5%, ..., 95%): their sliders move on it, so a slider value
# is always a row of a curve computed once
LEVELS = tuple(round(i / 20, 2) for i in range(20))
TOY_WEIGHT = "0.weight"  # the toy layer's one weight
GAINS_STRATEGY = "global-magnitude"


def toy_layer(*, seed: int = 0) -> nn.Sequential:
    """One small seeded Linear layer (16 outputs x 32 inputs): small enough to see every weight.

    The global random state is left as it was (the seed is used in a forked state).

    >>> toy_layer()[0].weight.shape
    torch.Size([16, 32])
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(32, 16))


def toy_mask(layer: nn.Module, sparsity: float) -> torch.Tensor:
    """The magnitude mask of the toy layer's weight at ``sparsity``: the smallest |w| go.

    >>> mask = toy_mask(toy_layer(), 0.25)
    >>> mask.dtype, round(1 - mask.float().mean().item(), 2)
    (torch.bool, 0.25)
    """
    return prune(layer, "layer-magnitude", sparsity=sparsity)[TOY_WEIGHT]


def shown_metric(table: pd.DataFrame) -> str:
    """The metric a lesson shows: accuracy where the data has labels, else agreement with the
    dense model (the share of inputs on which both predict the same class)."""
    if "accuracy" in table and table["accuracy"].notna().any():
        return "accuracy"
    return "agreement"


def gains(
    model: nn.Module,
    data: object | None = None,
    *,
    example_input: torch.Tensor,
    levels: Sequence[float] = LEVELS,
) -> pd.DataFrame:
    """What global magnitude pruning gains and costs at each sparsity of ``levels``.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (None: no metric columns).
        example_input: One input batch, to count FLOPs (floating-point operations).
        levels: Sparsities (fractions of the prunable weights zeroed).

    Returns:
        One row per level: ``requested``, ``sparsity`` (achieved), ``size`` (bytes stored,
        each weight in its smallest sparse format, as a fraction of the dense bytes),
        ``flops`` (effective FLOPs, those meeting a kept weight, as a fraction of the dense
        FLOPs) and, with data, the sweep's metrics (``accuracy``, ``agreement``, ...).
    """
    pruner = Pruner(model, GAINS_STRATEGY)  # scores sorted once, then a lookup per level
    dense_flops = flops_by_layer(model, example_input=example_input)
    rows = []
    for level in levels:
        masks = pruner.masks(sparsity=level)
        sizes = compression(model, masks)
        scaled = with_masks(dense_flops, masks)
        rows.append(
            {
                "requested": level,
                "sparsity": masks.sparsity(),
                "size": sizes["best_bytes"] / sizes["dense_bytes"],
                "flops": scaled["effective_flops"].sum() / max(scaled["flops"].sum(), 1),
            }
        )
    table = pd.DataFrame(rows)
    if data is not None:
        curve = sweep(model, data, strategies=[GAINS_STRATEGY], sparsities=list(levels))
        metrics = [c for c in ("accuracy", "agreement", "loss", "kl") if c in curve]
        table = table.merge(curve[["requested", *metrics]], on="requested")
    return table


_GAIN_NAMES = {
    "size": "stored size (sparse format)",
    "flops": "effective FLOPs",
    "accuracy": "accuracy",
    "agreement": "agreement with dense",
}


def gains_figure(table: pd.DataFrame, *, marked: float | None = None) -> go.Figure:
    """:func:`gains` as curves, all in percent against sparsity, the metric beside the gains.

    Args:
        table: From :func:`gains`.
        marked: A sparsity to mark (see :func:`mark_sparsity`), or None.

    Returns:
        A Figure with one curve per quantity (stored size, effective FLOPs, the metric).
    """
    shown = ["size", "flops"]
    if "agreement" in table:
        shown.append(shown_metric(table))
    long = table.melt(id_vars=["sparsity"], value_vars=shown, var_name="what", value_name="pct")
    long["what"] = long["what"].map(_GAIN_NAMES)
    long["pct"] = long["pct"] * 100
    fig = sparsity_curves(long, metric="pct", by="what", title="What pruning buys, and costs")
    fig.update_yaxes(title_text="% of the dense model", range=[0, 105])
    return mark_sparsity(fig, marked)


def marked_curves(table: pd.DataFrame, sparsity: float, *, title: str) -> tuple[go.Figure, str]:
    """Each strategy's curve of ``table`` in the metric a lesson shows (:func:`shown_metric`),
    with the student's ``sparsity`` marked; returns the figure and that metric."""
    metric = shown_metric(table)
    fig = sparsity_curves(table, metric=metric, title=title)
    return mark_sparsity(fig, sparsity), metric


def mark_sparsity(fig: go.Figure, sparsity: float | None) -> go.Figure:
    """``fig`` with a dotted vertical line at ``sparsity`` (x in percent), labelled; the
    figure itself is changed and returned (None: unchanged).

    >>> fig = mark_sparsity(go.Figure(), 0.4)
    >>> fig.layout.shapes[0].x0
    40.0
    """
    if sparsity is None:
        return fig
    return fig.add_vline(
        x=sparsity * 100,
        line_dash="dot",
        line_color="#7f7f7f",
        annotation_text=f"{sparsity:.0%}",
        annotation_position="top",
    )
