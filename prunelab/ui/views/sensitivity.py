"""The Sensitivity page's logic: the analysis and the comparison as long jobs, their figures,
and the recipe builder's draft (solved, edited, measured)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ... import figures, list_strategies, sweeps
from ...analysis.flops import mask_summary
from ...core.strategies import get_strategy
from ...core.targets import targets
from ...io.recipes import Recipe
from ...runtime.metrics import LOWER_IS_BETTER, is_token_data
from ...sweeps.solver import Curves, costs_for, measure
from .. import cache, jobs
from ..engine import Choice, sweep_executor
from ..errors import failing_as
from ..state import Keys

__all__ = [
    "BUDGETS",
    "DECIMALS",
    "LEVELS",
    "SLIDERS",
    "Allocations",
    "Analysis",
    "Comparison",
    "Draft",
    "Planned",
    "analysis_id",
    "budget_kinds",
    "computed",
    "draft",
    "layer_frame",
    "layer_names",
    "planned",
    "reapply_spec",
    "solved",
    "steps_frame",
    "usable_strategies",
]

# the recipe's sparsities are rounded once, here, so the table shows what the file holds
DECIMALS = 3
LEVELS = {
    3: (0.3, 0.6, 0.9),
    5: (0.2, 0.4, 0.6, 0.8, 0.95),
    9: tuple(round(0.1 * i, 2) for i in range(1, 10)),
    19: tuple(round(0.05 * i, 2) for i in range(1, 20)),
}
MAX_SPARSITY = 0.95  # the solver's ceiling per layer


def layer_names(choice: Choice) -> list[str]:
    """Every prunable tensor of the chosen model."""
    return [t.fqn for t in targets(choice.model)]


def usable_strategies() -> list[str]:
    """Strategies whose sparsity can be chosen (not N:M, whose pattern fixes it)."""
    return [n for n in list_strategies() if get_strategy(n).fixed_sparsity is None]


def computed(choice: Choice, prefix: str, settings: tuple, work, *, measure, label, running):
    """The result for ``settings``: remembered, else run as a job (None until one finishes).

    ``work(checkpoint, report)`` resumes the job's saved rows of these settings, if any. The
    finished checkpoint stays in the session's folder: if the shared result store drops the
    result, the job reads it back from there instead of running again.
    """
    result = cache.remembered(settings)
    if result is not None:
        return result
    job = jobs.Job(prefix, settings)
    estimate = None if measure is None else job.estimate(measure)
    result = jobs.start(job, estimate, work, label=label, running=running)
    if result is None:
        return None
    result.attrs.update(model=choice.model_key, data=choice.data_spec)
    cache.remember(settings, result)
    st.rerun()  # redraw without the Cancel button: the result is remembered now


@dataclass(frozen=True)
class Analysis:
    """One sensitivity analysis of the chosen model: its settings, and how to run them."""

    choice: Choice
    layers: tuple[str, ...]
    strategy: str
    options: tuple[tuple[str, object], ...]
    levels: tuple[float, ...]
    subset: int | None
    early_stop: float | None

    @property
    def method(self) -> str:
        """Evaluate on the data; without data, the data-free magnitude proxy."""
        return "magnitude" if self.choice.data is None else "evaluate"

    @property
    def metric(self) -> str:
        if self.choice.data is None:
            return "energy_removed"
        if is_token_data(self.choice.data):
            return "perplexity"  # next-token loss, not the share of tokens guessed right
        first = self.choice.data[0]
        labelled = isinstance(first, (tuple, list)) and len(first) == 2
        return "accuracy" if labelled else "agreement"

    @property
    def settings(self) -> tuple:
        """What the result depends on: its key in the result store and its checkpoint's name."""
        return (
            "sensitivity",
            self.choice.model_key,
            self.choice.data_spec,
            self.layers,
            self.strategy,
            self.options,
            self.levels,
            self.method,
            self.subset,
            self.early_stop,
            self.metric,
        )

    def run(self, checkpoint, report) -> pd.DataFrame:
        """The analysis (a job's work): resumes the checkpoint's rows of these settings."""
        choice = self.choice
        strategy = get_strategy(self.strategy, **dict(self.options))
        cal = None
        if strategy.needs:
            cal = cache.calibration(choice.model_key, choice.data_spec, _choice=choice)
        return sweeps.sensitivity(
            choice.model,
            choice.data,
            strategy=strategy,
            sparsities=self.levels,
            config=sweeps.SensitivityConfig(
                layers=list(self.layers),
                method=self.method,
                metric=self.metric,
                early_stop=self.early_stop,
                subset=self.subset,
                calibration=cal,
            ),
            # the data-free proxy finishes at once: nothing to checkpoint
            run=sweeps.RunOptions(
                progress=report,
                checkpoint=checkpoint if self.method == "evaluate" else None,
                resume=True,
                executor=sweep_executor(),  # a Ray cluster when PRUNELAB_RAY_ADDRESS names one
            ),
        )

    def estimate(self):
        """How long the analysis will take, timed on one evaluation."""
        return sweeps.estimate_sensitivity(
            self.choice.model,
            self.choice.data,
            strategy=get_strategy(self.strategy, **dict(self.options)),
            sparsities=self.levels,
            config=sweeps.SensitivityConfig(layers=list(self.layers), subset=self.subset),
        )

    def table(self) -> pd.DataFrame | None:
        """The finished table, or the job's controls (None until it has run)."""
        return computed(
            self.choice,
            Keys.sens_job,
            self.settings,
            self.run,
            # the proxy takes no time: nothing to estimate
            measure=self.estimate if self.method == "evaluate" else None,
            label="Run the analysis",
            running="Pruning one layer at a time",
        )

    def heatmap(self, table: pd.DataFrame) -> go.Figure:
        # kept per settings: the recipe slider reruns the page, these tables do not change
        return cache.figure(
            (*self.settings, "heatmap"), _build=lambda: figures.sensitivity_heatmap(table)
        )

    def blocks(self, table: pd.DataFrame) -> go.Figure | None:
        """Block x projection at the level nearest 50%, for a transformer (None otherwise)."""
        if "block" not in table or not (table["block"] >= 0).any():
            return None
        return cache.figure((*self.settings, "blocks"), _build=lambda: figures.block_heatmap(table))

    def curves(self, table: pd.DataFrame) -> go.Figure:
        return cache.figure(
            (*self.settings, "curves"),
            _build=lambda: figures.sparsity_curves(
                table, metric="drop", by="layer", title="Drop per layer"
            ),
        )


def analysis_id(analysis: Analysis) -> str:
    """Names the analysis in the recipe builder's keys: a new analysis or target starts from
    the solver's answer again, and the masks of a recipe are kept per analysis."""
    return hashlib.sha256(repr(analysis.settings).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Comparison:
    """Whole-model sweeps of several strategies on the analysis's levels (and dense)."""

    choice: Choice
    strategies: tuple[str, ...]
    levels: tuple[float, ...]
    subset: int | None

    @property
    def settings(self) -> tuple:
        choice = self.choice
        return (
            "sweep",
            choice.model_key,
            choice.data_spec,
            self.strategies,
            self.levels,
            self.subset,
        )

    @property
    def grid(self) -> tuple[float, ...]:
        return (0.0, *self.levels)

    def run(self, checkpoint, report) -> pd.DataFrame:
        return sweeps.sweep(
            self.choice.model,
            self.choice.data,
            strategies=list(self.strategies),
            sparsities=self.grid,
            run=sweeps.RunOptions(progress=report, checkpoint=checkpoint, resume=True),
        )

    def estimate(self):
        return sweeps.estimate_sweep(
            self.choice.model,
            self.choice.data,
            strategies=list(self.strategies),
            sparsities=self.grid,
        )

    def table(self) -> pd.DataFrame | None:
        """The finished sweep, or the job's controls (None until it has run)."""
        if not self.strategies:
            return None
        return computed(
            self.choice,
            Keys.sens_compare_job,
            self.settings,
            self.run,
            measure=self.estimate,
            label="Compare",
            running="Sweeping",
        )

    def figure(self, table: pd.DataFrame) -> go.Figure:
        shown = "accuracy" if "accuracy" in table else "agreement"
        return cache.figure(
            (*self.settings, shown), _build=lambda: figures.sparsity_curves(table, metric=shown)
        )


def solved(table: pd.DataFrame, target: float) -> Recipe:
    """The solver's recipe for ``target`` overall sparsity, its sparsities rounded."""
    with failing_as("The solver could not meet that target"):
        recipe = sweeps.solve(table, target_sparsity=target, max_sparsity=MAX_SPARSITY)
    return _rounded(recipe)


def _rounded(recipe: Recipe) -> Recipe:
    return replace(recipe, layers={k: round(v, DECIMALS) for k, v in recipe.layers.items()})


# label -> budget kind; a slider's (low, high, default, step) per kind, in the slider's units
BUDGETS = {
    "Overall sparsity": "sparsity",
    "Largest drop": "drop",
    "Parameters": "params",
    "FLOPs": "flops",
    "Speed-up": "speedup",
}
SLIDERS = {
    "sparsity": ("Overall sparsity of the analysed layers", 0.0, 0.95, 0.5, 0.05),
    "drop": ("Largest drop of the metric", 0.0, 0.3, 0.02, 0.005),
    "params": ("Parameters kept (share of the dense model's)", 0.05, 1.0, 0.5, 0.05),
    "flops": ("FLOPs kept (share of the dense model's)", 0.05, 1.0, 0.5, 0.05),
    "speedup": ("Times faster than dense (measured per layer on this machine)", 1.0, 3.0, 1.5, 0.1),
}


def budget_kinds(table: pd.DataFrame) -> list[str]:
    """The budget labels this analysis supports: latency only shrinks with channel recipes
    (zeros alone are multiplied like any other number), and a drop needs a measured metric."""
    kinds = list(BUDGETS)
    if table.attrs.get("granularity") != "channel":
        kinds.remove("Speed-up")
    if table.attrs.get("method") != "evaluate":
        kinds.remove("Largest drop")
    return kinds


def _budget(analysis: Analysis, table: pd.DataFrame, kind: str, value: float) -> sweeps.Budget:
    """The slider's value as a budget (shares of the dense parameters or FLOPs as counts,
    counted once per analysis the way the solver counts them)."""
    if kind not in ("params", "flops"):
        return sweeps.Budget(kind, value)
    key = (*analysis.settings, "dense", kind)
    dense = cache.remembered(key)
    if dense is None:
        choice = analysis.choice
        costs, _ = costs_for(
            sweeps.Budget(kind, 0), Curves.of(table), model=choice.model, data=choice.data
        )
        dense = cache.remember(key, costs.total({}))
    return sweeps.Budget(kind, value * dense)


def _latency_profile(choice: Choice) -> sweeps.LatencyProfile:
    """The model's per-layer latency table, measured once per model (a few seconds)."""
    key = ("latency-profile", choice.model_key)
    found = cache.remembered(key)
    if found is None:
        with st.spinner("Timing each layer once on this machine..."):
            found = sweeps.LatencyProfile.measure(choice.model, choice.bundle.example_input())
        cache.remember(key, found)
    return found


@dataclass(frozen=True)
class Planned:
    """The recipe for a budget: solved, and with data, checked by the planner's loop."""

    recipe: Recipe
    plan: sweeps.Plan | None


def planned(
    analysis: Analysis, table: pd.DataFrame, kind: str, value: float, evaluations: int
) -> Planned:
    """The recipe for ``value`` of budget ``kind`` (remembered per analysis and budget): with
    data, :func:`prunelab.sweeps.plan` measures, refits and re-solves ``evaluations`` times."""
    key = (*analysis.settings, "plan", kind, value, evaluations)
    found = cache.remembered(key)
    if found is not None:
        return found
    choice = analysis.choice
    budget = _budget(analysis, table, kind, value)
    with failing_as(f"The planner could not meet that {kind} budget"):
        if analysis.method != "evaluate":
            recipe = sweeps.solve(
                table, budget=budget, max_sparsity=MAX_SPARSITY, model=choice.model
            )
            return cache.remember(key, Planned(_rounded(recipe), None))
        profile = None
        if kind == "speedup":
            profile = _latency_profile(choice)
        config = sweeps.PlanConfig(
            evaluations=evaluations, max_sparsity=MAX_SPARSITY, profile=profile
        )
        result = sweeps.plan(table, budget, model=choice.model, data=choice.data, config=config)
    return cache.remember(key, Planned(_rounded(result.recipe), result))


@dataclass(frozen=True)
class Allocations:
    """One-shot metric of the known allocations and the solver's at a few targets."""

    analysis: Analysis
    targets: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9)

    @property
    def settings(self) -> tuple:
        return (*self.analysis.settings, "allocations", self.targets)

    def table(self, table: pd.DataFrame) -> pd.DataFrame | None:
        """The comparison, if computed (see :meth:`compute`)."""
        return cache.remembered(self.settings)

    def compute(self, table: pd.DataFrame) -> pd.DataFrame:
        """Prune with each allocation (magnitude within layers) and evaluate on the table's
        samples; the solver's allocation is :func:`~prunelab.sweeps.solve` on the table."""
        from ...sweeps.allocations import ALLOCATIONS, allocation, layer_weights

        choice = self.analysis.choice
        metric = table.attrs["metric"]
        layers = list(dict.fromkeys(table["layer"]))
        weights = layer_weights(choice.model, layers)
        calibration = cache.calibration(choice.model_key, choice.data_spec, _choice=choice)
        rows = []
        for target in self.targets:
            for name in ALLOCATIONS:
                per_layer = allocation(name, weights, target, calibration=calibration, table=table)
                recipe = Recipe(
                    strategy="layer-magnitude",
                    layers=per_layer,
                    provenance=replace(Recipe().provenance, metric=metric),
                )
                value = measure(
                    recipe, choice.model, choice.data, samples=table.attrs.get("samples")
                )
                rows.append({"allocation": name, "sparsity": target, metric: value})
        return cache.remember(self.settings, pd.DataFrame(rows))

    def figure(self, frame: pd.DataFrame, metric: str) -> go.Figure:
        return figures.allocation_comparison(
            frame, metric=metric, title="Allocations compared (one-shot, magnitude within layers)"
        )


def steps_frame(result: sweeps.Plan) -> pd.DataFrame:
    """The planner's steps as the page's table: what was tried, predicted and measured."""
    frame = result.table()
    return frame[
        [
            "step",
            "blend",
            "summed_drop",
            "predicted_drop",
            "extrapolated",  # a prediction beyond the measurements made before it
            "measured_drop",
            "error",
            "chosen",
        ]
    ].round(4)


def layer_frame(recipe: Recipe) -> pd.DataFrame:
    """The recipe's per-layer sparsities as the table the user edits."""
    return pd.DataFrame({"layer": list(recipe.layers), "sparsity": list(recipe.layers.values())})


@dataclass(frozen=True)
class Draft:
    """The recipe as edited, its masks and what they are predicted and measured to cost."""

    recipe: Recipe  # with its provenance: model, data, baseline, predicted and measured
    masks: object
    metric: str
    baseline: float
    drop: float  # predicted joint drop, on the metric's scale
    summed: float  # the single-layer drops, summed
    measured: float | None
    sparsity: float  # of all prunable weights
    dense_flops: int
    effective_flops: int

    def figure(self, choice: Choice) -> go.Figure:
        """Sparsity per layer (kept per layer counts: an edit elsewhere draws the kept one)."""
        return cache.layer_sparsity_figure(
            choice.model_key, self.masks, title="Recipe: sparsity per layer"
        )


def draft(
    analysis: Analysis,
    table: pd.DataFrame,
    solution: Planned,
    edited: pd.DataFrame,
    target: object,
) -> Draft:
    """The recipe with the user's edits: masks (kept per analysis and edits), predicted drop,
    measured metric (with data), effective FLOPs and provenance."""
    choice = analysis.choice
    per_layer = {
        row.layer: round(float(np.clip(row.sparsity, 0, 1)), DECIMALS)
        for row in edited.itertuples()
    }
    metric = table.attrs["metric"]
    baseline = float(table.attrs["baseline"])
    drop_model = solution.plan.drop_model if solution.plan is not None else None
    summed, drop = sweeps.predict(table, per_layer, drop_model)
    recipe = replace(solution.recipe, layers=per_layer)
    key = f"{analysis_id(analysis)}:{target}:{sorted(per_layer.items())}"
    masks = cache.recipe_masks(choice.model_key, key, choice, recipe)
    flops = cache.flop_table(choice.model_key, _choice=choice)
    counted = mask_summary(masks, flops)
    measured = None
    if analysis.method == "evaluate":
        # on the table's samples: its baseline and the prediction come from them
        samples = table.attrs.get("samples")
        measured = cache.evaluate_masks(choice, masks, samples=samples)[metric]
    lower_is_better = metric in LOWER_IS_BETTER
    provenance = replace(
        recipe.provenance,
        model=choice.model_key,
        data=choice.data_spec,
        metric=metric,
        baseline=baseline,
        predicted=baseline + drop if lower_is_better else baseline - drop,
        measured=measured,
    )
    return Draft(
        recipe=replace(recipe, provenance=provenance),
        masks=masks,
        metric=metric,
        baseline=baseline,
        drop=drop,
        summed=summed,
        measured=measured,
        sparsity=recipe.overall_sparsity(choice.model),
        dense_flops=counted.dense_flops,
        effective_flops=counted.effective_flops,
    )


def reapply_spec(choice: Choice) -> str:
    """The model's spec in the snippets that re-apply a recipe (uploads have none to give)."""
    return "MODEL_SPEC" if choice.model_key.startswith("upload:") else choice.model_key
