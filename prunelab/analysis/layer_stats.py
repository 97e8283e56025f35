"""Per-layer weight statistics, for looking at a model before pruning it."""

from __future__ import annotations

import pandas as pd
from torch import nn

from ..core.targets import get_parameter, targets

__all__ = ["weight_stats"]


def weight_stats(model: nn.Module, *, near_zero: float = 0.05) -> pd.DataFrame:
    """One row per prunable weight: type, shape, parameters, mean, std, mean |w|, near zero.

    Args:
        model: The model; not modified.
        near_zero: A weight counts as near zero when ``|w| <= near_zero * max|w|`` of its
            layer (relative, so layers of different scales compare).

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> table = weight_stats(nn.Sequential(nn.Linear(4, 3)))
    >>> table[["fqn", "type", "params"]].values.tolist()
    [['0.weight', 'Linear', 12]]
    """
    if not 0 <= near_zero <= 1:
        raise ValueError(f"near_zero is a fraction of the largest |w|, in [0, 1]; got {near_zero}")
    rows = []
    for target in targets(model):
        weight = get_parameter(model, target.fqn).detach().float()
        magnitude = weight.abs()
        largest = float(magnitude.max()) if weight.numel() else 0.0
        rows.append(
            {
                "fqn": target.fqn,
                "type": target.module_type,
                "shape": "x".join(map(str, target.shape)),
                "params": target.numel,
                "mean": float(weight.mean()),
                "std": float(weight.std()) if weight.numel() > 1 else 0.0,
                "mean |w|": float(magnitude.mean()),
                "max |w|": largest,
                "near zero": float((magnitude <= near_zero * largest).float().mean()),
            }
        )
    return pd.DataFrame(rows)
