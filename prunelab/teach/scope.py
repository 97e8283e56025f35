"""Lesson 3: layerwise against global pruning at the same overall sparsity.

*Layerwise* pruning takes the same fraction from every layer; *global* pruning ranks every
weight of the model together and cuts one threshold, so each layer loses what falls below it.
:func:`scope_masks` prunes a model both ways, :func:`scope_table` puts their per-layer
sparsities side by side and :func:`scope_curves` evaluates both at every sparsity.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from torch import nn

from ..core.masks import Masks
from ..core.pruner import Pruner
from ..sweeps import sweep
from .masks import LEVELS

__all__ = ["SCOPES", "scope_curves", "scope_masks", "scope_table"]

SCOPES = {"layerwise": "layer-magnitude", "global": "global-magnitude"}  # both by |w|


def scope_masks(model: nn.Module, sparsity: float) -> dict[str, Masks]:
    """``{"layerwise": masks, "global": masks}``: ``model`` pruned to ``sparsity`` both ways.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    >>> {k: round(m.sparsity(), 2) for k, m in scope_masks(net, 0.5).items()}
    {'layerwise': 0.5, 'global': 0.5}
    """
    return {name: Pruner(model, s).masks(sparsity=sparsity) for name, s in SCOPES.items()}


def scope_table(masks: dict[str, Masks]) -> pd.DataFrame:
    """Each layer's size and its sparsity under each scope, in model order.

    Returns:
        A DataFrame with ``layer``, ``weights`` (its element count) and one sparsity column
        per entry of ``masks``.
    """
    first = next(iter(masks.values())).per_layer()
    table = pd.DataFrame({"layer": first["fqn"], "weights": first["elements"]})
    for name, layer_masks in masks.items():
        table[name] = layer_masks.per_layer()["sparsity"].to_numpy()
    return table


def scope_curves(
    model: nn.Module, data: object, *, levels: Sequence[float] = LEVELS
) -> pd.DataFrame:
    """Both scopes evaluated on ``data`` at every level (a sweep whose ``strategy`` column
    names the scope: layerwise, global)."""
    table = sweep(model, data, strategies=list(SCOPES.values()), sparsities=list(levels))
    names = {strategy: name for name, strategy in SCOPES.items()}
    table["strategy"] = table["strategy"].map(names)
    return table
