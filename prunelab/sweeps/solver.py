"""From a sensitivity table to a recipe: per-layer sparsities under a budget.

A greedy search raises, step by step, the layer whose next measured level costs the least
predicted drop per unit of budget it saves (a pruned weight, a parameter, a FLOP, a
millisecond), and lands the last step exactly on the budget. The single-layer drops are summed
and mapped to the joint drop by a :class:`~prunelab.sweeps.interplay.DropModel`, so the
prediction stays on the metric's own scale; :func:`~prunelab.sweeps.plan` calibrates that map
against joint measurements.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..analysis.evaluation import evaluate
from ..core.calibration import Calibration
from ..core.pruner import LeftOut
from ..io.recipes import Provenance, Recipe
from ..runtime.checks import check_sparsity
from ..runtime.functional import functional_forward
from ..runtime.metrics import METRICS, logits_of
from .budgets import Budget, Costs
from .interplay import DropModel
from .runner import _subset_batches

__all__ = ["Curves", "allocate", "costs_for", "count_classes", "measure", "predict_drop", "solve"]

# per layer: sparsity levels (with 0), predicted drop (non-decreasing), elements
Curve = tuple[np.ndarray, np.ndarray, int]
_COLUMNS = {"layer", "elements", "sparsity", "drop"}


def _drop_curves(table: pd.DataFrame, column: str = "drop") -> dict[str, Curve]:
    """Per layer: sparsity levels (with 0), predicted drop (non-decreasing), elements."""
    curves = {}
    for layer, rows in table.groupby("layer", sort=False):
        rows = rows.sort_values("sparsity")
        levels = rows["sparsity"].to_numpy(dtype=float)
        drops = rows[column].to_numpy(dtype=float)
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


def predict_drop(
    table: pd.DataFrame, layers: Mapping[str, float], *, column: str = "drop"
) -> float:
    """The sum of each layer's own (interpolated) drop from a sensitivity table: what pruning
    the layers one at a time would cost. Layers not in ``layers`` count as dense.
    ``column="kl"`` sums the single-layer KL divergences instead.

    The joint drop differs (layers interact): :class:`~prunelab.sweeps.DropModel` maps this
    sum to a prediction on the metric's scale, and :func:`~prunelab.sweeps.plan` checks it.

    >>> table = pd.DataFrame({"layer": ["a", "a"], "elements": [10, 10],
    ...                       "sparsity": [0.5, 1.0], "drop": [0.1, 0.3]})
    >>> round(predict_drop(table, {"a": 0.75}), 3)
    0.2
    """
    curves = _drop_curves(table, column)
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
    budget: Budget | None = None,
    min_sparsity: float = 0.0,
    max_sparsity: float = 0.95,
    model: nn.Module | None = None,
    data: object | None = None,
) -> Recipe:
    """Turn a sensitivity table into per-layer sparsities under a budget.

    Greedy on the measured curves: starting from ``min_sparsity`` everywhere, repeatedly
    raise the layer whose next level costs the least predicted drop per unit of the budget
    it saves, until the budget is met (the last step is interpolated so that an overall
    sparsity, a parameter count or a FLOP count is met within one weight per layer), or
    until the predicted drop reaches ``max_drop``.

    The recipe's ``provenance.predicted`` is on the metric's scale: never below chance or
    above the dense value for accuracy, never below the dense value for a loss. With
    ``model`` and ``data`` the joint recipe is evaluated once, on the same samples the table
    was measured on, into ``provenance.measured``; :func:`~prunelab.sweeps.plan` goes on to
    correct the prediction with such measurements and re-solve.

    Args:
        table: Output of :func:`~prunelab.sweeps.sensitivity` (layer, elements, sparsity,
            drop).
        target_sparsity: Overall fraction of weights to zero (``Budget("sparsity", x)``).
        max_drop: Largest acceptable predicted drop of the metric (``Budget("drop", x)``).
        budget: Any :class:`~prunelab.sweeps.Budget` (parameters, FLOPs and latency need
            ``model`` and ``data``, whose first sample is the example input).
        min_sparsity: No layer below this.
        max_sparsity: No layer above this.
        model: The dense model, to measure the joint recipe and to count costs.
        data: Evaluation data, to measure the joint recipe.

    >>> table = pd.DataFrame({"layer": ["a", "a", "b", "b"], "elements": [100, 100, 100, 100],
    ...                       "sparsity": [0.5, 1.0, 0.5, 1.0], "drop": [0.0, 0.1, 0.2, 0.9]})
    >>> solve(table, target_sparsity=0.5, max_sparsity=1.0).layers
    {'a': 1.0, 'b': 0.0}
    """
    budget = _one_budget(target_sparsity, max_drop, budget)
    low, high = _check_bounds(table, min_sparsity, max_sparsity, budget)
    curves = Curves.of(table)
    drop_model = DropModel.for_metric(
        str(table.attrs.get("metric")),
        float(table.attrs.get("baseline") or 0.0),
        classes=None if model is None or data is None else count_classes(model, data),
    )
    costs, cap = costs_for(budget, curves, model=model, data=data)
    layers = allocate(curves, budget, costs, cap, (low, high), drop_model)
    recipe = _recipe(table.attrs, drop_model(predict_drop(table, layers)), layers)
    if model is not None and data is not None and recipe.provenance.metric in METRICS:
        measured = measure(recipe, model, data, samples=table.attrs.get("samples"))
        recipe = replace(recipe, provenance=replace(recipe.provenance, measured=measured))
    return recipe


def _one_budget(
    target_sparsity: float | None, max_drop: float | None, budget: Budget | None
) -> Budget:
    given = [b for b in (target_sparsity, max_drop, budget) if b is not None]
    if len(given) != 1:
        raise ValueError("give exactly one budget: target_sparsity, max_drop or budget")
    if target_sparsity is not None:
        return Budget("sparsity", check_sparsity(target_sparsity, what="target_sparsity"))
    if max_drop is not None:
        if not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) or max_drop < 0:
            raise ValueError(f"max_drop must be a finite number >= 0, got {max_drop}")
        return Budget("drop", float(max_drop))
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    return budget


def _check_bounds(
    table: pd.DataFrame, min_sparsity: float, max_sparsity: float, budget: Budget | None = None
):
    """The layers' sparsity bounds (low, high), once the table (and budget) pass."""
    missing = _COLUMNS - set(table.columns)
    if missing:
        raise ValueError(f"not a sensitivity table: missing column(s) {sorted(missing)}")
    granularity = table.attrs.get("granularity", "unstructured")
    if budget is not None and budget.kind in ("latency", "speedup") and granularity != "channel":
        raise ValueError(
            f"a {budget.kind} budget needs a channel recipe (zeros alone are multiplied like any "
            f"other number, so they make nothing faster); this table is {granularity}: run "
            "sensitivity with a channel strategy such as weight-norm-channel"
        )
    low = check_sparsity(min_sparsity, what="min_sparsity")
    high = check_sparsity(max_sparsity, what="max_sparsity")
    if low > high:
        raise ValueError(f"min_sparsity {low} is above max_sparsity {high}")
    if budget is not None and budget.kind == "sparsity" and budget.value > high + 1e-9:
        raise ValueError(
            f"target_sparsity {budget.value} is above max_sparsity {high}: unreachable"
        )
    return low, high


def costs_for(
    budget: Budget,
    curves: Curves,
    *,
    model: nn.Module | None = None,
    data: object | None = None,
    profile=None,
) -> tuple[Costs, float]:
    """The costs ``budget`` caps and the cap (a drop budget caps nothing: it prunes weights
    until the drop is spent)."""
    elements = {layer: curve[2] for layer, curve in curves.drop.items()}
    if budget.kind == "drop":
        return Costs.linear(elements), -math.inf
    example = None
    if budget.kind in ("flops", "latency", "speedup") and data is not None:
        example = _first_sample(data)
    return Costs.for_budget(budget, elements, model=model, example_input=example, profile=profile)


@dataclass(frozen=True)
class Curves:
    """A table's per-layer curves: the metric's drop and, where measured, the KL divergence
    (a finer view of the same damage: it breaks the ties of drops too small to count)."""

    drop: Mapping[str, Curve]
    kl: Mapping[str, Curve] | None = None

    @classmethod
    def of(cls, table: pd.DataFrame) -> Curves:
        kl = None
        if "kl" in table.columns and table.attrs.get("metric") != "kl":
            kl = _drop_curves(table, "kl")
        return cls(_drop_curves(table), kl)

    def spend(self, feature: str) -> Mapping[str, Curve]:
        """The curves a drop budget is spent on: those its :class:`DropModel` sums."""
        return self.kl if feature == "kl" and self.kl is not None else self.drop


_TIE = 0.01  # the weight of the KL beside the drop: enough to order ties, not to overrule


def allocate(
    curves: Curves,
    budget: Budget,
    costs: Costs,
    cap: float,
    bounds: tuple[float, float],
    drop_model: DropModel,
) -> dict[str, float]:
    """Per-layer sparsities that bring ``costs`` under ``cap`` at the least summed drop (for a
    drop budget: as many weights as the drop the model allows); refused, saying how far it
    got, when the budget cannot be met within ``bounds``."""
    low, high = bounds
    allowance = None
    if budget.kind == "drop":
        # without joint measurements, additivity is trusted no further than itself
        allowance = drop_model.inverse(budget.value)
        allowance = budget.value if drop_model.fitted_on == 0 else allowance
    current = _Greedy(curves, costs, high, curves.spend(drop_model.feature)).run(
        low, cap, allowance
    )
    reached = costs.total(current)
    if math.isfinite(cap) and reached > cap + 1e-9 * max(abs(cap), 1.0):
        best = costs.total(dict.fromkeys(current, high))
        raise ValueError(
            f"cannot meet the {budget.kind} budget {budget.value:g}: the measured levels (up to "
            f"max_sparsity {high}) bring the {_cost_name(budget)} down to {best:.6g}, not "
            f"{cap:.6g} (overall sparsity at most {_sparsity(curves.drop, current):.4f})"
        )
    return current


def _cost_name(budget: Budget) -> str:
    names = {"sparsity": "kept weights", "params": "parameters", "flops": "FLOPs"}
    return names.get(budget.kind, "latency (s)")


def _sparsity(curves: Mapping[str, Curve], layers: Mapping[str, float]) -> float:
    total = sum(c[2] for c in curves.values())
    return sum(layers[n] * c[2] for n, c in curves.items()) / max(total, 1)


@dataclass(frozen=True)
class _Greedy:
    curves: Curves
    costs: Costs
    high: float
    spend: Mapping[str, Curve]

    def run(self, low: float, cap: float, allowance: float | None) -> dict[str, float]:
        """Per-layer sparsities raised cheapest step first until the cost is under ``cap``
        (or the summed drop reaches ``allowance``); the last step lands on the budget."""
        costs = self.costs
        current = dict.fromkeys(self.curves.drop, low)
        spent = sum(_interp(self.spend[n], low) for n in current)
        total = costs.total(current)
        # a drop budget caps no cost (cap = -inf): it stops on the allowance alone
        slack = 1e-12 * max(abs(cap), 1.0) if math.isfinite(cap) else 0.0
        while total > cap + slack:
            best = self._cheapest(current)
            if best is None:
                break
            layer, step, gain = best
            start = current[layer]
            used = _interp(self.spend[layer], step) - _interp(self.spend[layer], start)
            if allowance is not None and spent + used > allowance:
                if math.isfinite(used) and used > 0:
                    # linear between measured levels: spend exactly what is left
                    current[layer] = start + (step - start) * (allowance - spent) / used
                break
            if total - gain < cap:
                step = _land(costs, layer, start, step, costs.layer(layer, start) - (total - cap))
            current[layer] = step
            spent += used
            total = costs.total(current)
        return current

    def _cheapest(self, current: dict[str, float]) -> tuple[str, float, float] | None:
        """(layer, next level, saved) of the step with the least drop per unit saved."""
        best, best_rate = None, math.inf
        for layer, curve in self.curves.drop.items():
            levels = curve[0]
            # the measured levels up to max_sparsity, and max_sparsity itself (interpolated)
            steps = np.unique(
                np.r_[levels[levels <= self.high + 1e-12], min(self.high, levels[-1])]
            )
            now = self.costs.layer(layer, current[layer])
            for step in steps[steps > current[layer] + 1e-12]:
                gain = now - self.costs.layer(layer, float(step))
                if gain > 0:  # a step that saves nothing (a flat latency) is no step
                    break
            else:
                continue
            step = float(step)
            cost = _interp(curve, step) - _interp(curve, current[layer])
            if self.curves.kl is not None:
                kl = self.curves.kl[layer]
                cost += _TIE * (_interp(kl, step) - _interp(kl, current[layer]))
            if math.isfinite(cost) and cost / gain < best_rate:
                best, best_rate = (layer, step, gain), cost / gain
        return best


def _land(costs: Costs, layer: str, start: float, stop: float, goal: float) -> float:
    """The sparsity in [start, stop] where the layer's (decreasing) cost equals ``goal``."""
    a, b = start, stop
    for _ in range(60):
        mid = (a + b) / 2
        a, b = (mid, b) if costs.layer(layer, mid) > goal else (a, mid)
    return b


def _recipe(attrs: Mapping, predicted_drop: float, layers: dict[str, float]) -> Recipe:
    """The recipe of ``layers``, its provenance (metric, baseline, prediction) from ``attrs``."""
    baseline = attrs.get("baseline")
    metric = attrs.get("metric")
    predicted = None
    if baseline is not None and metric is not None:
        predicted = DropModel.for_metric(metric, baseline).value(float(baseline), predicted_drop)
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
        options=dict(attrs.get("options") or {}),
    )


def _first_sample(data: object) -> torch.Tensor:
    return _subset_batches(data, 1, 1, None)[0].inputs


def count_classes(model: nn.Module, data: object) -> int | None:
    """How many classes the model scores (None when its output is not class scores)."""
    try:
        with torch.no_grad():  # functional: a model in training mode keeps its statistics
            return int(logits_of(functional_forward(model, {}, _first_sample(data))).shape[-1])
    except (ValueError, RuntimeError, TypeError):
        return None


def measure(
    recipe: Recipe, model: nn.Module, data: object, *, samples: int | None = None
) -> float | None:
    """The recipe's metric, pruned all at once, on the first ``samples`` samples of ``data``
    (the samples its sensitivity table was measured on: the same data as the prediction)."""
    metric = recipe.provenance.metric
    subset = _subset_batches(data, None if samples is None else int(samples), 128, None)
    batches = [(b.inputs, b.labels) if b.labels is not None else b.inputs for b in subset]
    # data-driven strategies (Wanda, SparseGPT, Taylor) calibrate on the same samples; the
    # statistics are computed lazily, so a weight-only recipe pays nothing for this
    masks = recipe.masks(model, Calibration(model, batches))
    measured = evaluate(model, batches, masks=masks, metrics=(metric,))
    return measured.get(metric)
