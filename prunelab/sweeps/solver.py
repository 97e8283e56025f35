"""From a sensitivity table to a recipe: per-layer sparsities under a budget.

The drop each layer's curve predicts is summed over layers; a greedy search raises, step by
step, the layer whose next measured level costs the least predicted drop per pruned weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pandas as pd
from torch import nn

from ..analysis.evaluation import evaluate
from ..core.pruner import LeftOut
from ..io.recipes import Provenance, Recipe
from ..runtime.checks import check_sparsity
from ..runtime.metrics import METRICS
from .config import LOWER_IS_BETTER

__all__ = ["predict_drop", "solve"]

# per layer: sparsity levels (with 0), predicted drop (non-decreasing), elements
Curve = tuple[np.ndarray, np.ndarray, int]
_COLUMNS = {"layer", "elements", "sparsity", "drop"}


def _drop_curves(table: pd.DataFrame) -> dict[str, Curve]:
    """Per layer: sparsity levels (with 0), predicted drop (non-decreasing), elements."""
    curves = {}
    for layer, rows in table.groupby("layer", sort=False):
        rows = rows.sort_values("sparsity")
        levels = rows["sparsity"].to_numpy(dtype=float)
        drops = rows["drop"].to_numpy(dtype=float)
        # skipped (early-stopped) points count as too damaging to use
        drops = np.where(np.isnan(drops), np.inf, drops)
        if levels[0] > 0:
            levels, drops = np.r_[0.0, levels], np.r_[0.0, drops]
        # a curve that dips is noise: never predict less damage from pruning more
        curves[layer] = (
            levels,
            np.maximum.accumulate(np.maximum(drops, 0.0)),
            int(rows["elements"].iloc[0]),
        )
    return curves


def predict_drop(table: pd.DataFrame, layers: Mapping[str, float]) -> float:
    """Predicted drop of the metric for per-layer sparsities: the sum of each layer's own
    (interpolated) drop from a sensitivity table. Layers not in ``layers`` count as dense.

    >>> table = pd.DataFrame({"layer": ["a", "a"], "elements": [10, 10],
    ...                       "sparsity": [0.5, 1.0], "drop": [0.1, 0.3]})
    >>> round(predict_drop(table, {"a": 0.75}), 3)
    0.2
    """
    curves = _drop_curves(table)
    unknown = [layer for layer in layers if layer not in curves]
    if unknown:
        raise ValueError(f"layers not in the sensitivity table: {unknown[:5]}")
    return sum(_interp(curves[layer], s) for layer, s in layers.items())


def _interp(curve: Curve, sparsity: float) -> float:
    levels, drops, _ = curve
    return float(np.interp(sparsity, levels, drops))


def solve(
    table: pd.DataFrame,
    *,
    target_sparsity: float | None = None,
    max_drop: float | None = None,
    min_sparsity: float = 0.0,
    max_sparsity: float = 0.95,
    model: nn.Module | None = None,
    data: object | None = None,
) -> Recipe:
    """Turn a sensitivity table into per-layer sparsities under a budget.

    Greedy on the measured curves: starting from ``min_sparsity`` everywhere, repeatedly
    raise the layer whose next level costs the least predicted drop per pruned weight,
    until the overall sparsity (by elements) reaches ``target_sparsity`` (the last step is
    interpolated so the target is met within one weight per layer), or until one more step
    would push the summed predicted drop above ``max_drop``.

    Single-layer drops do not simply add up, so with ``model`` and ``data`` the joint recipe
    is evaluated once and the recipe's provenance reports predicted and measured values.

    Args:
        table: Output of :func:`~prunelab.sweeps.sensitivity` (layer, elements, sparsity,
            drop).
        target_sparsity: Overall fraction of weights to zero.
        max_drop: Largest acceptable predicted drop of the metric.
        min_sparsity: No layer below this.
        max_sparsity: No layer above this.
        model: The dense model, to measure the joint recipe.
        data: Evaluation data, to measure the joint recipe.

    >>> table = pd.DataFrame({"layer": ["a", "a", "b", "b"], "elements": [100, 100, 100, 100],
    ...                       "sparsity": [0.5, 1.0, 0.5, 1.0], "drop": [0.0, 0.1, 0.2, 0.9]})
    >>> solve(table, target_sparsity=0.5, max_sparsity=1.0).layers
    {'a': 1.0, 'b': 0.0}
    """
    low, high = _check_budget(table, target_sparsity, max_drop, min_sparsity, max_sparsity)
    curves = _drop_curves(table)
    total = sum(e for _, _, e in curves.values())
    goal = _goal(target_sparsity, high, total)
    current, pruned = _greedy(curves, low, high, goal, max_drop)
    if goal is not None and pruned < goal - 1e-6:
        raise ValueError(
            f"cannot reach target_sparsity {target_sparsity}: the measured levels (up to "
            f"max_sparsity {high}) allow at most {pruned / total:.4f}"
        )
    recipe = _recipe(table.attrs, sum(_interp(curves[n], s) for n, s in current.items()), current)
    if model is not None and data is not None and recipe.provenance.metric in METRICS:
        recipe = _measured(recipe, model, data)
    return recipe


def _check_budget(
    table: pd.DataFrame,
    target_sparsity: float | None,
    max_drop: float | None,
    min_sparsity: float,
    max_sparsity: float,
) -> tuple[float, float]:
    """The layers' sparsity bounds (low, high), once exactly one budget and the table pass."""
    if (target_sparsity is None) == (max_drop is None):
        raise ValueError("give exactly one budget: target_sparsity or max_drop")
    missing = _COLUMNS - set(table.columns)
    if missing:
        raise ValueError(f"not a sensitivity table: missing column(s) {sorted(missing)}")
    low = check_sparsity(min_sparsity, what="min_sparsity")
    high = check_sparsity(max_sparsity, what="max_sparsity")
    if low > high:
        raise ValueError(f"min_sparsity {low} is above max_sparsity {high}")
    if max_drop is not None and (not math.isfinite(max_drop) or max_drop < 0):
        raise ValueError(f"max_drop must be a finite number >= 0, got {max_drop}")
    return low, high


def _goal(target_sparsity: float | None, high: float, total: int) -> float | None:
    """How many weights to prune (None: as many as ``max_drop`` allows)."""
    if target_sparsity is None:
        return None
    goal = check_sparsity(target_sparsity) * total
    if goal > high * total + 1e-9:
        raise ValueError(
            f"target_sparsity {target_sparsity} is above max_sparsity {high}: unreachable"
        )
    return goal


def _greedy(
    curves: dict[str, Curve],
    low: float,
    high: float,
    goal: float | None,
    max_drop: float | None,
) -> tuple[dict[str, float], float]:
    """Per-layer sparsities raised cheapest step first, and the weights they prune."""
    current = {layer: low for layer in curves}
    pruned = sum(low * e for _, _, e in curves.values())
    while goal is None or pruned < goal - 1e-9:
        best = _cheapest_step(curves, current, high)
        if best is None or not math.isfinite(best[0]):
            break
        _, layer, step, elements = best
        if max_drop is not None and _over_budget(curves, current, layer, step, max_drop):
            break
        gain = (step - current[layer]) * elements
        if goal is not None and pruned + gain > goal:
            step = current[layer] + (goal - pruned) / elements  # land exactly on the target
            gain = goal - pruned
        current[layer] = step
        pruned += gain
    return current, pruned


def _cheapest_step(
    curves: dict[str, Curve], current: dict[str, float], high: float
) -> tuple[float, str, float, int] | None:
    """(drop per pruned weight, layer, next level, elements) of the cheapest next step."""
    best = None
    for layer, curve in curves.items():
        levels, _, elements = curve
        # the measured levels up to max_sparsity, and max_sparsity itself (interpolated)
        steps = np.unique(np.r_[levels[levels <= high + 1e-12], min(high, levels[-1])])
        above = steps[steps > current[layer] + 1e-12]
        if above.size == 0:
            continue
        step = float(above[0])
        cost = _interp(curve, step) - _interp(curve, current[layer])
        rate = cost / ((step - current[layer]) * elements)
        if best is None or rate < best[0]:
            best = (rate, layer, step, elements)
    return best


def _over_budget(
    curves: dict[str, Curve], current: dict[str, float], layer: str, step: float, max_drop: float
) -> bool:
    """Whether raising ``layer`` to ``step`` pushes the summed predicted drop past the budget."""
    spent = sum(_interp(curves[name], s) for name, s in current.items())
    curve = curves[layer]
    return spent + _interp(curve, step) - _interp(curve, current[layer]) > max_drop


def _recipe(attrs: Mapping, predicted_drop: float, layers: dict[str, float]) -> Recipe:
    """The recipe of ``layers``, its provenance (metric, baseline, prediction) from ``attrs``."""
    baseline = attrs.get("baseline")
    metric = attrs.get("metric")
    predicted = None
    if baseline is not None and metric is not None:
        sign = 1 if metric in LOWER_IS_BETTER else -1
        predicted = float(baseline) + sign * predicted_drop
    return Recipe(
        strategy=attrs.get("strategy", "layer-magnitude"),
        granularity=attrs.get("granularity", "unstructured"),
        layers={layer: round(s, 6) for layer, s in layers.items()},
        provenance=Provenance(
            metric=metric,
            baseline=None if baseline is None else float(baseline),
            predicted=predicted,
            left_out=LeftOut(tuple(attrs.get("left_out") or ())).note,
        ),
        prune_outputs=bool(attrs.get("prune_outputs", False)),
    )


def _measured(recipe: Recipe, model: nn.Module, data: object) -> Recipe:
    """``recipe`` with the joint drop measured once: single-layer drops do not simply add."""
    metric = recipe.provenance.metric
    measured = evaluate(model, data, masks=recipe.masks(model), metrics=(metric,))
    return replace(recipe, provenance=replace(recipe.provenance, measured=measured.get(metric)))
