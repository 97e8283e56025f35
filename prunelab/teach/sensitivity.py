"""Lesson 5: sensitivity differs per layer. Prune one layer at a time and watch which break.

The table is :func:`prunelab.sweeps.sensitivity`'s (each layer alone pruned to each sparsity,
the rest of the model left dense); this module picks the sample model and the levels, says
which layers break at the sparsity a student chose, and marks that choice on the curves of
:func:`prunelab.figures.sparsity_curves`.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
>>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
>>> table = layer_sensitivity(net, (x, y), sparsities=(0.5, 0.9))
>>> broken_layers(table, 0.9, tolerance=1.0)["broken"].tolist()
[False, False]
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from torch import nn

from .. import figures, sweeps

__all__ = [
    "LEVELS",
    "SAMPLE_MODEL",
    "TOLERANCE",
    "broken_layers",
    "layer_sensitivity",
    "sensitivity_figure",
]

# nine layers of very different roles (the stem, convolutions, a 1x1 shortcut, the classifier):
# pruned alone, they break at very different sparsities
SAMPLE_MODEL = "sample:digits-resnet"
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
TOLERANCE = 0.02  # an accuracy drop above two points counts as "broken"


def layer_sensitivity(
    model: nn.Module,
    data: object,
    *,
    sparsities: Sequence[float] = LEVELS,
    subset: int | None = None,
) -> pd.DataFrame:
    """Each layer alone pruned (by weight magnitude) to each sparsity: the accuracy drop.

    Args:
        model: The dense model; not modified.
        data: Labelled evaluation data.
        sparsities: The sparsity levels.
        subset: Evaluate on the first ``subset`` samples only (None: all of ``data``).

    Returns:
        :func:`prunelab.sweeps.sensitivity`'s table: one row per (layer, sparsity) with the
        accuracy and its ``drop`` from the dense model's (positive = worse).
    """
    config = sweeps.SensitivityConfig(metric="accuracy", subset=subset)
    return sweeps.sensitivity(
        model, data, strategy="layer-magnitude", sparsities=sparsities, config=config
    )


def _level(table: pd.DataFrame, sparsity: float) -> float:
    """The table's sparsity level nearest to ``sparsity``."""
    return min(table["sparsity"].unique(), key=lambda level: abs(level - sparsity))


def broken_layers(table: pd.DataFrame, sparsity: float, *, tolerance: float) -> pd.DataFrame:
    """Each layer's accuracy drop at ``sparsity`` (the table's nearest level), in model order,
    and whether it broke: lost more than ``tolerance`` (a fraction: 0.02 is two points).

    Returns:
        Columns layer, elements, drop, broken.
    """
    rows = table[table["sparsity"] == _level(table, sparsity)]
    frame = rows[["layer", "elements", "drop"]].reset_index(drop=True)
    frame["broken"] = frame["drop"] > tolerance
    return frame


def sensitivity_figure(table: pd.DataFrame, sparsity: float, *, tolerance: float) -> go.Figure:
    """The layers' drop-vs-sparsity curves, the chosen sparsity as a dotted vertical line and
    the tolerance as a dashed horizontal one: a curve above the dash at the dotted line is a
    layer that breaks there."""
    fig = figures.sparsity_curves(
        table, metric="drop", by="layer", title="Each layer pruned alone: accuracy lost"
    )
    # the figure draws shares in percent and drops of accuracy in points
    fig.add_vline(x=_level(table, sparsity) * 100, line_dash="dot", line_color="#7f7f7f")
    fig.add_hline(
        y=tolerance * 100,
        line_dash="dash",
        line_color="#d62728",
        annotation_text=f"breaks: loses more than {tolerance * 100:.0f} points",
        annotation_position="top left",
    )
    return fig
