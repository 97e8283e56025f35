"""A recipe planner whose predictions are checked: solve, measure the joint recipe, refit,
re-solve, within a number of evaluations the user sets.

Single-layer drops do not add up: the solver's first prediction (their sum, clamped to the
metric's range) is often far from what pruning all layers at once measures. :func:`plan`
measures the joint recipe on the same samples the sensitivity table used, fits the map from
summed to joint drop (:class:`~prunelab.sweeps.DropModel`) to every measurement so far, and
uses the rest of its evaluations to re-solve:

* a drop budget: the summed drop the refitted map allows is re-solved for, until the measured
  drop is within the budget and the prediction within ``tolerance`` of it;
* any other budget (sparsity, parameters, FLOPs, latency): the allocation is moved part of the
  way towards the uniform one that meets the same budget (both meet it, and so does any mix of
  the two for the linear costs), keeping whichever measures best. Sensitivity tables
  over-trust robust layers; joint measurements say how far.

Every step is recorded: the recipe, the summed drop, the prediction made *before* measuring
and the measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import pandas as pd
from torch import nn

from ..io.recipes import Recipe
from .budgets import Budget, LatencyProfile
from .interplay import DropModel, lower_is_better
from .solver import (
    Curves,
    _check_bounds,
    _one_budget,
    _recipe,
    allocate,
    costs_for,
    count_classes,
    measure,
    predict_drop,
)

__all__ = ["Plan", "PlanConfig", "PlanStep", "interplay_note", "plan", "predict"]

_BLENDS = (0.0, 0.5, 0.25, 0.75, 1.0)  # towards uniform: the order they are tried in


@dataclass(frozen=True, kw_only=True)
class PlanConfig:
    """How :func:`plan` searches.

    Attributes:
        evaluations: Joint measurements allowed (at least 1).
        tolerance: A prediction within this of the measurement counts as converged.
        min_sparsity: No layer below this.
        max_sparsity: No layer above this.
        profile: A latency table measured once (latency and speedup budgets; None: measured
            on the first call).
        drop_model: A map already fitted (e.g. by an earlier plan on this table).
        progress: ``progress(fraction_done, message)`` after each evaluation.

    >>> PlanConfig(evaluations=4).evaluations
    4
    """

    evaluations: int = 3
    tolerance: float = 0.02
    min_sparsity: float = 0.0
    max_sparsity: float = 0.95
    profile: LatencyProfile | None = None
    drop_model: DropModel | None = None
    progress: Callable[[float, str], None] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.evaluations, bool) or not isinstance(self.evaluations, int):
            raise TypeError(f"evaluations must be an int, got {self.evaluations!r}")
        if self.evaluations < 1:
            raise ValueError(f"evaluations must be at least 1, got {self.evaluations}")
        if not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise ValueError(f"tolerance must be a number >= 0, got {self.tolerance}")


@dataclass(frozen=True)
class PlanStep:
    """One evaluation of the loop: its recipe's layers, the summed single-layer drop, the
    joint drop predicted before measuring (on the metric's scale), and the measured one."""

    step: int
    blend: float  # 0: the solver's allocation, 1: uniform
    layers: Mapping[str, float]
    summed_drop: float
    predicted_drop: float
    measured_drop: float
    cost: float
    summed_kl: float | None = None  # the single-layer KLs summed, where the table has them
    extrapolated: bool = True  # predicted beyond the measurements made before it


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` found: the chosen recipe, every step, and the fitted map.

    ``predicted_drop`` is the chosen recipe's prediction made before it was measured (from
    the map fitted to the measurements before it); ``held_out_drop`` predicts it from every
    joint measurement except its own, the later ones included.
    """

    recipe: Recipe
    steps: tuple[PlanStep, ...]
    drop_model: DropModel
    budget: Budget
    chosen: int  # index into steps
    held_out_drop: float  # the chosen recipe's, from every measurement but its own
    held_out_extrapolated: bool = True  # False: interpolated between other measurements

    @property
    def predicted_drop(self) -> float:
        """The chosen recipe's joint drop as predicted before it was measured."""
        return self.steps[self.chosen].predicted_drop

    @property
    def summed_drop(self) -> float:
        """The chosen recipe's single-layer drops, summed."""
        return self.steps[self.chosen].summed_drop

    @property
    def measured_drop(self) -> float:
        """The chosen recipe's joint drop, measured."""
        return self.steps[self.chosen].measured_drop

    def table(self) -> pd.DataFrame:
        """One row per step: blend, summed, predicted and measured drop, cost, error."""
        rows = [
            {
                "step": s.step,
                "blend": s.blend,
                "summed_drop": s.summed_drop,
                "predicted_drop": s.predicted_drop,
                "measured_drop": s.measured_drop,
                "error": s.predicted_drop - s.measured_drop,
                "extrapolated": s.extrapolated,
                "cost": s.cost,
                "chosen": i == self.chosen,
            }
            for i, s in enumerate(self.steps)
        ]
        return pd.DataFrame(rows)

    def note(self) -> str:
        """Why the summed and the joint drop differ, in words (see :func:`interplay_note`)."""
        return interplay_note(self.summed_drop, self.measured_drop, self.drop_model.metric)


def predict(
    table: pd.DataFrame, layers: Mapping[str, float], drop_model: DropModel | None = None
) -> tuple[float, float]:
    """(summed single-layer drop, predicted joint drop) of ``layers``: the joint drop from
    ``drop_model`` (e.g. :attr:`Plan.drop_model`; None: additivity clamped to the metric's
    range, chance unknown).

    >>> table = pd.DataFrame({"layer": ["a", "a"], "elements": [10, 10],
    ...                       "sparsity": [0.5, 1.0], "drop": [0.4, 0.9]})
    >>> table.attrs.update(metric="accuracy", baseline=0.8)
    >>> summed, joint = predict(table, {"a": 1.0})
    >>> summed, round(joint, 3)  # the sum says 0.9; accuracy cannot fall below 0
    (0.9, 0.54)
    """
    summed = predict_drop(table, layers)
    if drop_model is None:
        drop_model = DropModel.for_metric(table.attrs["metric"], float(table.attrs["baseline"]))
    if drop_model.feature == "kl" and "kl" in table.columns:
        return summed, drop_model(predict_drop(table, layers, column="kl"))
    return summed, drop_model(summed)


def interplay_note(summed: float, joint: float, metric: str) -> str:
    """A sentence on summed single-layer drops against the joint drop.

    >>> interplay_note(0.02, 0.10, "accuracy")[:40]
    'Pruned one at a time, the layers lose 2.'
    """
    if lower_is_better(metric):  # perplexity, loss, KL: the damage is a rise
        text = (
            f"Pruned one at a time, the layers raise {metric} by {summed:.2f} in sum; pruned "
            f"together by {joint:.2f}. "
        )
        overlap = "the damage overlaps (the same tokens are mispredicted twice)."
    else:
        text = (
            f"Pruned one at a time, the layers lose {summed * 100:.1f} points of {metric} in "
            f"sum; pruned together they lose {joint * 100:.1f} points. "
        )
        overlap = (
            "the damage overlaps (the same samples are lost twice) and the metric cannot fall "
            "below chance."
        )
    if joint > summed * 1.1 + 1e-3:
        return text + (
            "Together it is worse: each layer then works on inputs that the layers before it "
            "have already damaged, which no single-layer measurement sees."
        )
    if joint < summed * 0.9 - 1e-3:
        return text + "Together it is less than the sum: " + overlap
    return text + "Here the layers barely interact: the sum is a fair guess."


def plan(
    table: pd.DataFrame,
    budget: Budget | float,
    *,
    model: nn.Module,
    data: object,
    config: PlanConfig | None = None,
) -> Plan:
    """Solve, measure the joint recipe, refit the prediction and re-solve (see the module).

    Args:
        table: A sensitivity table (``method="evaluate"``) of ``model`` on ``data``.
        budget: A :class:`~prunelab.sweeps.Budget`, or a number: the overall sparsity.
        model: The dense model; not modified.
        data: The evaluation data; the table's samples (its subset) are used.
        config: Evaluations, tolerance, bounds, latency profile (see :class:`PlanConfig`).

    Returns:
        A :class:`Plan`: the best measured recipe that meets the budget (its provenance has
        the prediction made before measuring it and the measurement), and every step.

    >>> import torch
    >>> from torch import nn
    >>> from prunelab.sweeps import sensitivity
    >>> _ = torch.manual_seed(0); net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> data = (torch.randn(64, 8), torch.randint(0, 3, (64,)))
    >>> table = sensitivity(net, data, sparsities=[0.3, 0.6, 0.9])
    >>> result = plan(table, 0.5, model=net, data=data, config=PlanConfig(evaluations=2))
    >>> len(result.steps) <= 2
    True
    """
    config = config or PlanConfig()
    if not isinstance(config, PlanConfig):
        raise TypeError(f"config must be a PlanConfig, got {type(config).__name__}")
    if not isinstance(budget, Budget):
        budget = _one_budget(budget, None, None)
    metric, baseline = table.attrs.get("metric"), table.attrs.get("baseline")
    if metric is None or baseline is None or table.attrs.get("method", "evaluate") != "evaluate":
        raise ValueError("plan needs a table measured with method='evaluate' (metric, baseline)")
    bounds = _check_bounds(table, config.min_sparsity, config.max_sparsity, budget)
    curves = Curves.of(table)
    costs, cap = costs_for(budget, curves, model=model, data=data, profile=config.profile)
    drop_model = config.drop_model or DropModel.for_metric(
        metric, float(baseline), classes=count_classes(model, data)
    )
    loop = _Loop(table, model, data, drop_model, config, initial=drop_model)
    if budget.kind == "drop":
        loop.drop_budget(curves, budget, costs, cap, bounds)
    else:
        solver = allocate(curves, budget, costs, cap, bounds, drop_model)
        uniform = _uniform(curves, budget, costs, cap, bounds, drop_model)
        loop.blends(solver, uniform, costs)
    return loop.result(budget)


def _uniform(curves, budget, costs, cap, bounds, drop_model) -> dict[str, float]:
    """One sparsity for every layer that meets the budget (bisection on the monotone cost)."""
    low, high = bounds
    names = list(curves.drop)
    if costs.total(dict.fromkeys(names, high)) > cap:
        return allocate(curves, budget, costs, cap, bounds, drop_model)
    a, b = low, high
    for _ in range(60):
        mid = (a + b) / 2
        a, b = (mid, b) if costs.total(dict.fromkeys(names, mid)) > cap else (a, mid)
    return dict.fromkeys(names, b)


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return all(abs(a[k] - b[k]) < 1e-9 for k in a)


@dataclass
class _Loop:
    table: pd.DataFrame
    model: nn.Module
    data: object
    drop_model: DropModel
    config: PlanConfig
    steps: list[PlanStep] = field(default_factory=list)
    initial: DropModel | None = None  # the map before this plan's measurements
    points: list[tuple[float, float | None, float]] = field(default_factory=list)

    @property
    def left(self) -> int:
        return self.config.evaluations - len(self.steps)

    def evaluate(self, layers: Mapping[str, float], blend: float, cost: float) -> PlanStep:
        summed = predict_drop(self.table, layers)
        kl = None
        if "kl" in self.table.columns and self.drop_model.metric != "kl":
            kl = predict_drop(self.table, layers, column="kl")
        # made before the measurement, never after
        feature = kl if self.drop_model.feature == "kl" else summed
        predicted = self.drop_model(feature)
        beyond = self.drop_model.extrapolated(feature)
        recipe = _recipe(self.table.attrs, predicted, dict(layers))
        value = measure(recipe, self.model, self.data, samples=self.table.attrs.get("samples"))
        baseline = float(self.table.attrs["baseline"])
        measured = value - baseline if lower_is_better(self.drop_model.metric) else baseline - value
        step = PlanStep(
            len(self.steps), blend, dict(layers), summed, predicted, measured, cost, kl, beyond
        )
        self.steps.append(step)
        self.points.append((summed, kl, measured))
        self.drop_model = self.refit(self.initial)
        if self.config.progress is not None:
            self.config.progress(len(self.steps) / self.config.evaluations, f"step {step.step}")
        return step

    def blends(self, solver: dict, uniform: dict, costs) -> None:
        tried: set[float] = set()
        for blend in _BLENDS:
            if self.left <= 0:
                break
            if self.steps and self._settled(blend, tried):
                continue
            layers = {n: (1 - blend) * solver[n] + blend * uniform[n] for n in solver}
            self.evaluate(layers, blend, costs.total(layers))
            tried.add(blend)

    def _settled(self, blend: float, tried: set[float]) -> bool:
        """Whether ``blend`` can be skipped: a neighbour on the far side of the best already
        measured worse (the measured drop along the blend is taken to be unimodal)."""
        best = min(self.steps, key=lambda s: s.measured_drop)
        if best.blend == 0.0 and blend in (0.25, 0.75, 1.0):
            worse = [s for s in self.steps if s.blend > 0 and s.measured_drop > best.measured_drop]
            return any(s.blend <= blend for s in worse)
        if best.blend == 0.5 and blend == 1.0:
            return any(s.blend == 0.75 and s.measured_drop > best.measured_drop for s in self.steps)
        return blend in tried

    def drop_budget(self, curves, budget: Budget, costs, cap, bounds) -> None:
        while self.left > 0:
            layers = allocate(curves, budget, costs, cap, bounds, self.drop_model)
            if self.steps and _same(layers, self.steps[-1].layers):
                break  # the refit changed nothing: measuring it again would tell nothing new
            step = self.evaluate(layers, 0.0, costs.total(layers))
            close = abs(step.predicted_drop - step.measured_drop) <= self.config.tolerance
            if close and step.measured_drop <= budget.value:
                break

    def refit(self, model: DropModel, skip: int | None = None) -> DropModel:
        """``model`` fitted to the measurements so far (all but step ``skip``)."""
        points = [p for i, p in enumerate(self.points) if i != skip]
        fitted = [(k, d) for _, k, d in points if k is not None]
        if fitted:  # the summed KL sees damage too small for the metric's drops
            return model.refit(fitted, feature="kl")
        return model.refit([(s, d) for s, _, d in points])

    def held_out(self, index: int) -> tuple[float, bool]:
        """Step ``index``'s prediction from every other joint measurement (not its own), and
        whether it lies beyond them (extrapolated) rather than between them."""
        model = self.refit(self.initial, skip=index)
        step = self.steps[index]
        feature = step.summed_kl if model.feature == "kl" else step.summed_drop
        return model(feature), model.extrapolated(feature)

    def result(self, budget: Budget) -> Plan:
        if budget.kind == "drop":
            within = [s for s in self.steps if s.measured_drop <= budget.value]
            # the most pruning within the drop; if none kept within it, the least drop
            chosen = (
                min(within, key=lambda s: s.cost)
                if within
                else min(self.steps, key=lambda s: s.measured_drop)
            )
        else:
            chosen = min(self.steps, key=lambda s: (s.measured_drop, s.step))
        baseline = float(self.table.attrs["baseline"])
        predicted, beyond = self.held_out(chosen.step)
        recipe = _recipe(self.table.attrs, chosen.predicted_drop, dict(chosen.layers))
        measured = self.drop_model.value(baseline, chosen.measured_drop)
        recipe = replace(recipe, provenance=replace(recipe.provenance, measured=measured))
        steps = tuple(self.steps)
        return Plan(recipe, steps, self.drop_model, budget, chosen.step, predicted, beyond)
