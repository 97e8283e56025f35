"""Lesson 2: unstructured, channel and N:M pruning at the same sparsity, where they can be.

*Unstructured* pruning may zero any single weight; *channel* pruning zeroes whole rows (output
channels), so its sparsity moves in steps of one row; *N:M* keeps N of every M consecutive
weights, so its sparsity is fixed at ``1 - N/M`` (2:4 is always 50%). :func:`pattern_masks`
gives the toy layer's three masks for one asked sparsity (N:M the nearest pattern it allows)
and :func:`pattern_table` says what each really reached. :func:`pattern_curves` evaluates the
three patterns on a real model at every sparsity, for the cost of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..analysis.evaluation import evaluate
from ..core.masks import Masks
from ..core.pruner import Pruner
from ..core.strategies import Strategy, get_strategy
from .masks import LEVELS, TOY_WEIGHT

__all__ = ["GROUP_SIZES", "nearest_nm", "pattern_curves", "pattern_masks", "pattern_table"]

GROUP_SIZES = (4, 8)  # M of the N:M patterns offered: 2:4 is the one GPUs accelerate


def nearest_nm(sparsity: float, m: int = 4) -> tuple[int, int]:
    """The N:M pattern (0 < N < M) whose sparsity ``1 - N/M`` is nearest to ``sparsity``;
    ties keep more weights.

    >>> nearest_nm(0.5), nearest_nm(0.9), nearest_nm(0.0), nearest_nm(0.3, 8)
    ((2, 4), (1, 4), (3, 4), (6, 8))
    """
    n = min(range(1, m), key=lambda k: (abs(1 - k / m - sparsity), -k))
    return n, m


def _strategies(sparsity: float, m: int) -> dict[str, tuple[Strategy, float | None]]:
    """Each pattern's strategy, with the sparsity to ask of it (None: fixed by the pattern)."""
    n, m = nearest_nm(sparsity, m)
    return {
        "unstructured": (get_strategy("layer-magnitude"), sparsity),
        # the toy layer is its own output: here its rows are what this lesson removes
        "channel": (
            get_strategy("layer-magnitude", granularity="channel", prune_outputs=True),
            sparsity,
        ),
        f"{n}:{m}": (get_strategy("n:m", granularity=f"{n}:{m}"), None),
    }


def pattern_masks(layer: nn.Module, sparsity: float, *, m: int = 4) -> dict[str, torch.Tensor]:
    """The toy layer's mask for each pattern at ``sparsity`` (by magnitude in every case).

    Args:
        layer: The toy layer (:func:`prunelab.teach.masks.toy_layer`).
        sparsity: The asked fraction of weights zeroed.
        m: The N:M pattern's group size; N is chosen by :func:`nearest_nm`.

    Returns:
        ``{"unstructured": mask, "channel": mask, "N:M": mask}``, in that order.
    """
    masks = {}
    for name, (strategy, level) in _strategies(sparsity, m).items():
        pruner = Pruner(layer, strategy)
        masks[name] = pruner.masks(sparsity=level)[TOY_WEIGHT]
    return masks


def pattern_table(weight: torch.Tensor, masks: dict[str, torch.Tensor], sparsity: float):
    """What each pattern really reached against the asked ``sparsity``.

    Returns:
        A DataFrame, one row per pattern: ``pattern``, ``sparsity`` (achieved),
        ``magnitude_kept`` (the share of the layer's total |w| that the mask keeps: what is
        left of the layer) and ``why`` (why the sparsity differs from the one asked, if it does).

    >>> from prunelab.teach.masks import toy_layer
    >>> layer = toy_layer()
    >>> table = pattern_table(layer[0].weight, pattern_masks(layer, 0.3), 0.3)
    >>> table["sparsity"].round(2).tolist(), table["why"].tolist()[1:]
    ([0.3, 0.31, 0.25], ['whole rows only: steps of 1/16 (6.2%)', '3:4 always zeroes 25%'])
    """
    total = weight.detach().abs().sum().item()
    rows = []
    for name, mask in masks.items():
        reached = 1 - mask.float().mean().item()
        why = ""
        if abs(reached - sparsity) > 1e-3:  # more than whole weights' rounding
            if name == "channel":
                why = f"whole rows only: steps of 1/{mask.shape[0]} ({1 / mask.shape[0]:.1%})"
            elif name != "unstructured":
                why = f"{name} always zeroes {reached:.0%}"
        kept = weight.detach().abs()[mask].sum().item() / total
        rows.append({"pattern": name, "sparsity": reached, "magnitude_kept": kept, "why": why})
    return pd.DataFrame(rows)


def pattern_curves(
    model: nn.Module, data: object, *, m: int = 4, levels: Sequence[float] = LEVELS
) -> pd.DataFrame:
    """Each pattern evaluated on ``model`` at each level: what it costs at the same sparsity.

    All three prune the same layers, those N:M can (a layer whose inputs are not a multiple
    of M cannot be cut in groups of M), so a sparsity means the same weights for each.
    Channel pruning leaves the model's output layer whole (removing one of its channels would
    remove a class), so its achieved sparsity stays below the one asked. The N:M rows are one
    per pattern with group size ``m`` (N = 1 ... M-1).

    Returns:
        One row per (pattern, level): ``strategy`` (the pattern: unstructured, channel,
        N:M), ``requested``, ``sparsity`` (achieved over those layers) and the metrics of
        :func:`prunelab.evaluate`; the N:M rows' ``requested`` is their fixed sparsity.
    """
    layers = [t.fqn for t in Pruner(model, get_strategy("n:m", granularity=f"1:{m}")).targets]
    rows = []

    def add(pattern: str, masks: Masks, requested: float) -> None:
        metrics = evaluate(model, data, masks=masks)
        metrics.pop("samples", None)
        rows.append(
            {"strategy": pattern, "requested": requested, "sparsity": masks.sparsity(), **metrics}
        )

    for pattern in ("unstructured", "channel"):
        strategy = get_strategy("layer-magnitude", granularity=pattern)
        pruner = Pruner(model, strategy, targets=layers)  # scores sorted once per pattern
        for level in levels:
            add(pattern, pruner.masks(sparsity=level), level)
    for n in range(m - 1, 0, -1):  # from the sparsest-but-one to the sparsest, left to right
        add(
            f"N:{m}",
            Pruner(model, get_strategy("n:m", granularity=f"{n}:{m}"), targets=layers).masks(),
            1 - n / m,
        )
    return pd.DataFrame(rows)
