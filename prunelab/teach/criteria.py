"""Lesson 4: which weights matter: magnitude, random, gradient and activation criteria.

A *criterion* scores each weight; the lowest scores are pruned. *Magnitude* is |w|;
*random* is the baseline a criterion must beat; *gradient* is |w x dL/dw|, a first-order
estimate of how much the loss changes when the weight is removed; *activation* is
|w| x the size of the input it multiplies (Wanda). The last two are data-driven: they need
*calibration* data, a few batches run through the model. All four prune each layer by the
same fraction, so only the criterion differs. :func:`criterion_curves` evaluates them at
every sparsity and :func:`at_sparsity` reads one level off the curves.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from torch import nn

from ..core.calibration import Calibration
from ..sweeps import SweepConfig, sweep
from .masks import LEVELS

__all__ = ["CRITERIA", "at_sparsity", "criterion_curves"]

CRITERIA = {  # the criterion in words -> its layerwise strategy
    "magnitude": "layer-magnitude",
    "random": "random",
    "gradient": "layer-magnitude-gradient",
    "activation": "layer-activation-magnitude",
}


def criterion_curves(
    model: nn.Module,
    data: object,
    criteria: Sequence[str] = tuple(CRITERIA),
    *,
    levels: Sequence[float] = LEVELS,
    calibration: Calibration | None = None,
) -> pd.DataFrame:
    """The ``criteria`` (keys of :data:`CRITERIA`) evaluated on ``data`` at every level.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (and, without ``calibration``, the calibration data too).
        criteria: Which criteria, by name.
        levels: Sparsities.
        calibration: Gradients and activations for the data-driven criteria (default: made
            from ``data`` when one of them is asked for).

    Returns:
        A sweep table whose ``strategy`` column names the criterion.
    """
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise ValueError(f"unknown criteria {unknown}; choose from {', '.join(CRITERIA)}")
    table = sweep(
        model,
        data,
        strategies=[CRITERIA[c] for c in criteria],
        sparsities=list(levels),
        config=SweepConfig(calibration=calibration),
    )
    names = {strategy: name for name, strategy in CRITERIA.items()}
    table["strategy"] = table["strategy"].map(names)
    return table


def at_sparsity(table: pd.DataFrame, metric: str, level: float) -> pd.Series:
    """Each curve's ``metric`` at the requested sparsity ``level`` (the row nearest to it).

    >>> table = pd.DataFrame({"strategy": ["a", "a"], "requested": [0.0, 0.5], "x": [1, 2]})
    >>> at_sparsity(table, "x", 0.45).to_dict()
    {'a': 2}
    """
    nearest = table.loc[
        (table["requested"] - level).abs().groupby(table["strategy"], sort=False).idxmin()
    ]
    return nearest.set_index("strategy")[metric]
