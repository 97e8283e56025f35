"""Accuracy-vs-sparsity curves: many mask sets evaluated on one model, never copied."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from .calibration import Calibration
from .evaluate import evaluate
from .pruner import Pruner
from .select import check_sparsity
from .strategies import Strategy, get_strategy

__all__ = ["sweep"]

Progress = Callable[[float, str], None]


def sweep(
    model: nn.Module,
    data: object,
    *,
    strategies: Sequence[str | Strategy],
    sparsities: Sequence[float],
    calibration: Calibration | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Evaluate each strategy at each sparsity on one fixed evaluation set.

    Masks are applied through ``functional_call`` on the one model (no copies), and each
    strategy's scores are sorted once, so a point costs one forward pass over ``data``.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (see :func:`prunelab.evaluate.evaluate`).
        strategies: Names or Strategy objects.
        sparsities: Sparsities to evaluate, each in [0, 1].
        calibration: For data-driven strategies (default: built from ``data``).
        device: Where to evaluate.
        progress: ``progress(fraction_done, message)`` after each point.
        seed: Seed for random strategies.

    Returns:
        One row per (strategy, sparsity): strategy, sparsity (achieved), accuracy, loss,
        agreement, kl (those the data allows), nonzeros.

    >>> net = nn.Sequential(nn.Linear(6, 3))
    >>> x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    >>> table = sweep(net, (x, y), strategies=["random"], sparsities=[0.0, 0.5])
    >>> table["sparsity"].tolist()
    [0.0, 0.5]
    """
    levels = [check_sparsity(s) for s in sparsities]
    chosen = [get_strategy(s) for s in strategies]
    if not chosen or not levels:
        raise ValueError("sweep needs at least one strategy and one sparsity")
    if calibration is None and any(s.needs for s in chosen):
        calibration = Calibration(model, data, device=device)
    total, done = len(chosen) * len(levels), 0
    rows = []
    for strategy in chosen:
        pruner = Pruner(model, strategy, calibration=calibration if strategy.needs else None,
                        seed=seed)
        for level in levels:
            masks = pruner.masks() if strategy.fixed_sparsity is not None else pruner.masks(
                sparsity=level
            )
            metrics = evaluate(model, data, masks=masks, device=device)
            kept = int(masks.per_layer()["kept"].sum())
            rows.append(
                {
                    "strategy": strategy.name,
                    "requested": level,
                    "sparsity": masks.sparsity(),
                    **{k: v for k, v in metrics.items() if k != "samples"},
                    "nonzeros": kept,
                }
            )
            done += 1
            if progress is not None:
                progress(done / total, f"{strategy.name} at {level:.0%}")
    return pd.DataFrame(rows)
