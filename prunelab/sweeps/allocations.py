"""Known per-layer sparsity allocations, to compare with the solver's.

Each maps a target overall sparsity (the fraction of the chosen layers' weights zeroed) to one
sparsity per layer; the weights inside a layer are then chosen by magnitude, so only the
allocation differs:

* ``uniform``: every layer at the target.
* ``global-magnitude``: one threshold on |w| over all layers.
* ``lamp`` (Lee et al. 2021): each weight scored ``w^2 / (sum of w^2 of the weights of its
  layer at least as large)``, then one global threshold on the scores.
* ``erk`` (Evci et al. 2020, RigL): density proportional to ``sum(shape) / prod(shape)``
  (``(n_in + n_out + kh + kw) / (n_in n_out kh kw)`` for a convolution), scaled to the target
  and capped at dense (a capped layer's share goes to the others).
* ``owl`` (Yin et al. 2023): a layer's outlier ratio is the fraction of its Wanda scores
  ``|W_ij| * ||X_j||`` above ``M`` times the layer's mean score; ratios are normalised to
  ``[0, 2 lambda]`` and ``sparsity_l = target - (ratio_l - mean ratio)``: layers with more
  outliers keep more. The mean is weighted by layer size so the overall sparsity is the
  target (the paper's plain mean is the same for its equal-sized blocks).
* ``solver``: :func:`~prunelab.sweeps.solve` on a sensitivity table.

>>> import torch
>>> weights = {"a": torch.arange(1.0, 101.0), "b": torch.arange(1.0, 101.0) * 100}
>>> allocation("global-magnitude", weights, 0.5)
{'a': 1.0, 'b': 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.calibration import Calibration
from ..core.targets import get_parameter
from ..runtime.checks import check_sparsity

__all__ = ["ALLOCATIONS", "allocation", "layer_weights", "outlier_ratios"]

ALLOCATIONS = ("uniform", "global-magnitude", "lamp", "erk", "owl", "solver")


def layer_weights(model: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    """The weights of ``layers`` (fqns), detached, on the CPU."""
    return {fqn: get_parameter(model, fqn).detach().float().cpu() for fqn in layers}


def allocation(
    name: str,
    weights: Mapping[str, torch.Tensor],
    target: float,
    *,
    calibration: Calibration | None = None,
    table: pd.DataFrame | None = None,
    owl: tuple[float, float] = (5.0, 0.08),
) -> dict[str, float]:
    """Per-layer sparsities of allocation ``name`` (see the module) at ``target`` overall.

    Args:
        name: One of :data:`ALLOCATIONS`.
        weights: ``{fqn: weight}`` of the layers to prune (:func:`layer_weights`).
        target: Overall sparsity of these layers, in [0, 1].
        calibration: Input norms for ``owl`` (a layer without them scores ``|W|`` alone).
        table: The sensitivity table for ``solver``.
        owl: OWL's ``(M, lambda)``; the paper's defaults are 5 and 0.08.
    """
    target = check_sparsity(target, what="target")
    if not weights:
        raise ValueError("no layers to allocate over")
    if name == "uniform":
        return dict.fromkeys(weights, target)
    if name == "global-magnitude":
        return _global({k: w.abs().flatten() for k, w in weights.items()}, target)
    if name == "lamp":
        return _global({k: _lamp_scores(w) for k, w in weights.items()}, target)
    if name == "erk":
        return _erk({k: tuple(w.shape) for k, w in weights.items()}, target)
    if name == "owl":
        ratios = outlier_ratios(weights, calibration, m=owl[0])
        return _owl(ratios, {k: w.numel() for k, w in weights.items()}, target, owl[1])
    if name == "solver":
        if table is None:
            raise ValueError("the solver's allocation needs a sensitivity table (table=...)")
        from .solver import solve

        layers = solve(table, target_sparsity=target, max_sparsity=1.0).layers
        return {k: float(layers.get(k, 0.0)) for k in weights}
    raise ValueError(f"unknown allocation {name!r}; accepted: {', '.join(ALLOCATIONS)}")


def _global(scores: Mapping[str, torch.Tensor], target: float) -> dict[str, float]:
    """The share of each layer among the ``target`` fraction of lowest scores overall."""
    sizes = [s.numel() for s in scores.values()]
    flat = torch.cat([s.flatten().double() for s in scores.values()]).numpy()
    k = round(target * flat.size)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    pruned = np.zeros(len(sizes))
    if k:
        # a stable sort: ties go to the earlier layer, the same way every time
        lowest = np.argsort(flat, kind="stable")[:k]
        pruned = np.bincount(owner[lowest], minlength=len(sizes))
    return {name: float(p / n) for name, p, n in zip(scores, pruned, sizes, strict=True)}


def _lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP: ``w_u^2 / sum_{v >= u} w_v^2`` over the layer sorted by magnitude."""
    squared = weight.double().flatten().square()
    order = torch.argsort(squared, stable=True)
    ranked = squared[order]
    # the sum of the squares of every weight at least as large (itself included)
    behind = torch.flip(torch.cumsum(torch.flip(ranked, [0]), 0), [0])
    scores = torch.empty_like(squared)
    scores[order] = ranked / behind.clamp_min(1e-300)
    return scores


def _erk(shapes: Mapping[str, tuple[int, ...]], target: float) -> dict[str, float]:
    """ERK densities, capped at dense: capped layers leave the rest to share the budget."""
    sizes = {k: float(np.prod(s)) for k, s in shapes.items()}
    raw = {k: sum(s) / sizes[k] for k, s in shapes.items()}
    kept = (1 - target) * sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [k for k in shapes if k not in dense]
        if not free:
            break
        budget = kept - sum(sizes[k] for k in dense)
        eps = budget / sum(raw[k] * sizes[k] for k in free)
        over = [k for k in free if eps * raw[k] > 1]
        if not over:
            break
        dense.add(max(over, key=lambda k: raw[k]))  # the densest first, as RigL's code does
    return {k: 0.0 if k in dense else float(1 - eps * raw[k]) for k in shapes}


def outlier_ratios(
    weights: Mapping[str, torch.Tensor], calibration: Calibration | None, *, m: float = 5.0
) -> dict[str, float]:
    """OWL's layer outlier ratio: the share of Wanda scores ``|W| * ||X||`` above ``m``
    times the layer's mean score."""
    ratios = {}
    for fqn, weight in weights.items():
        scores = weight.abs()
        norm = None
        if calibration is not None:
            try:
                norm = calibration.input_norm(fqn).float().cpu()
            except (ValueError, KeyError):
                norm = None  # recurrent weights: no visible input; |W| alone
        if norm is not None and weight.ndim >= 2 and norm.numel() == weight.shape[1]:
            scores = scores * norm.view(1, -1, *([1] * (weight.ndim - 2)))
        ratios[fqn] = float((scores > m * scores.mean()).double().mean())
    return ratios


def _owl(
    ratios: Mapping[str, float], sizes: Mapping[str, int], target: float, lam: float
) -> dict[str, float]:
    values = np.array([ratios[k] for k in ratios])
    spread = values.max() - values.min()
    normalized = (values - values.min()) / spread * 2 * lam if spread > 0 else values * 0
    weight = np.array([sizes[k] for k in ratios], dtype=float)
    shift = normalized - np.average(normalized, weights=weight)
    sparsity = np.clip(target - shift, 0.0, 1.0)
    return {k: float(s) for k, s in zip(ratios, sparsity, strict=True)}
