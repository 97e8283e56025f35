"""The Train page's logic: the masks to train with, the runs (fine-tuning and gradual pruning)
as a job, and the quantized evaluations of the fine-tuned model.

A classifier is judged by accuracy; a language model by perplexity (lower is better), and
trained with :data:`prunelab.training.config.LM_CONFIG` on the first ``LM_SEQUENCES``
training sequences by default, sized so that both runs on the sample language model finish
well within a minute on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NoReturn

import pandas as pd
import streamlit as st

from ... import figures, training
from ...analysis import evaluate
from ...core.masks import Masks
from ...core.targets import targets
from ...errors import InputError
from ...figures.fmt import metric_value, percent
from ...io.recipes import Recipe
from ...training import Gradual, TrainConfig
from .. import cache, engine, jobs
from ..engine import Choice
from ..errors import failing_as
from ..quality import headline_name
from ..state import Keys

__all__ = [
    "BITS",
    "LIVE_UPDATES",
    "LM_SUFFIX",
    "RATES",
    "SOURCES",
    "Plan",
    "freezable_layers",
    "global_masks",
    "gradual_schedule",
    "headline_values",
    "is_language_model",
    "prune_page_masks",
    "quantized_rows",
    "recipe_masks",
    "result_key",
    "train",
]

SOURCES = ("Global magnitude at a sparsity", "Masks from the Prune page", "A recipe")
RATES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
BITS = (16, 8, 6, 4, 3, 2)
LIVE_UPDATES = 20  # redraws of the live chart per run
LM_SUFFIX = "_lm"  # a language model's epochs and rate widgets: Keys.train_epochs + LM_SUFFIX


def is_language_model(choice: Choice) -> bool:
    """Whether the chosen model is trained on next tokens (and judged by perplexity)."""
    return choice.bundle.task == "language-model"


def global_masks(choice: Choice, sparsity: float) -> tuple[Masks, str]:
    """Global magnitude masks at ``sparsity`` and their label (scores sorted once: a slider
    move is a lookup)."""
    layers = tuple(t.fqn for t in targets(choice.model))
    pruner = cache.pruner(
        choice.model_key, choice.data_spec, "global-magnitude", (), layers, 0, _choice=choice
    )
    return pruner.masks(sparsity=sparsity), f"global-magnitude at {sparsity:.0%}"


def prune_page_masks(choice: Choice) -> tuple[Masks, str] | None:
    """The Prune page's masks and their label; None when there are none yet.

    Raises:
        InputError: They belong to another model.
    """
    masks = st.session_state.get(Keys.masks)
    if masks is None:
        return None
    problem = engine.masks_misfit(choice, masks)
    if problem:
        raise InputError(
            f"The Prune page's masks do not fit this model ({problem}); prune this model "
            "on the Prune page again, or pick another source."
        )
    return masks, st.session_state.get(Keys.masks_label, "masks from the Prune page")


def recipe_masks(choice: Choice, text: str) -> tuple[Masks, str]:
    """The masks of a recipe (YAML or JSON text) on the chosen model, and their label."""
    with failing_as("That recipe cannot be used"):
        recipe = Recipe.loads(text)
        calibration = None
        if recipe.build_strategy().needs:
            calibration = cache.calibration(choice.model_key, choice.data_spec, _choice=choice)
        masks = recipe.masks(choice.model, calibration)
    return masks, f"recipe {recipe.strategy} at {masks.sparsity():.0%}"


def freezable_layers(choice: Choice) -> list[str]:
    """The modules that hold prunable weights, in order: one freeze box each."""
    return list(dict.fromkeys(t.module_fqn for t in targets(choice.model)))


@dataclass(frozen=True)
class Plan:
    """What the page trains: the settings, the gradual run's schedule, the data.

    Attributes:
        config: Epochs, learning rate, optimizer, batch size, frozen layers.
        kind: The gradual schedule, ``"cubic"`` or ``"linear"``.
        window: When the gradual run starts and ends pruning, as fractions of the run.
        sequences: A language model's training sequences (the first ones of the training
            split); None: all the training data.
    """

    config: TrainConfig
    kind: str = "cubic"
    window: tuple[float, float] = (0.0, 0.67)
    sequences: int | None = None


def result_key(choice: Choice, masks: Masks, plan: Plan) -> tuple:
    """What a training run's result depends on (its key in the result store)."""
    return ("train", choice.model_key, choice.data_spec, engine.masks_digest(masks), plan)


def gradual_schedule(sparsity: float, kind: str, window: tuple[float, float], total: int):
    """The gradual run's schedule: from dense at ``window[0]`` to ``sparsity`` at ``window[1]``
    (fractions of the ``total`` optimizer steps); the end is at least one step after the start.
    """
    start = min(round(window[0] * total), total - 1)
    end = max(start + 1, round(window[1] * total))
    return Gradual(0.0, sparsity, start=start, end=end, kind=kind)


def _live(rows: list[dict]) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame(rows)
    return {name: part for name, part in frame.groupby("run", sort=False)}


def _run(choice: Choice, masks: Masks, plan: Plan, report) -> dict:
    """Fine-tune and prune gradually, reporting progress and drawing a live chart."""
    config = plan.config
    train_data = cache.train_split(choice.data_spec)
    if plan.sequences is not None and hasattr(train_data, "head"):  # token data: the first
        train_data = train_data.head(plan.sequences)
    dense = cache.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
    metric = headline_name(dense) or "accuracy"
    measured = (
        ("perplexity", "loss", "accuracy") if metric == "perplexity" else ("accuracy", "loss")
    )
    per_epoch = training.steps_per_epoch(train_data, batch_size=config.batch_size)
    total = config.epochs * per_epoch
    sparsity = masks.sparsity()
    schedule = gradual_schedule(sparsity, plan.kind, plan.window, total)
    live = st.empty()  # the live chart, below the job's progress bar
    histories: dict[str, pd.DataFrame] = {}
    rows: list[dict] = []
    every = max(1, total // LIVE_UPDATES)

    def callback(name: str, offset: float):
        def step(progress) -> None:
            rows.append({"run": name, **asdict(progress)})
            report(offset + progress.fraction / 2, f"{name}: {progress.message}")
            if progress.step % every == 0 or progress.step + 1 == progress.total:
                live.plotly_chart(figures.training_curves(_live(rows), metric=metric))

        return step

    tuned, histories["fine-tuned"] = training.finetune(
        choice.model, masks, train_data, config=config, callback=callback("fine-tuned", 0.0)
    )
    gradual, histories["gradual"] = training.prune_while_training(
        choice.model,
        train_data,
        strategy="global-magnitude",
        schedule=schedule,
        config=config,
        callback=callback("gradual", 0.5),
    )
    live.empty()
    test = choice.data
    return {
        "dense": dense,
        "metric": metric,  # what stands for quality: accuracy, or perplexity (lower is better)
        "one-shot": evaluate(choice.model, test, masks=masks, metrics=measured),
        "fine-tuned": evaluate(tuned, test, metrics=measured),
        "gradual": evaluate(gradual, test, metrics=measured),
        "tuned": tuned,  # kept for the quantized evaluations, which need no new training
        "histories": histories,
        "schedule": schedule,
        "total": total,
        "sparsity": sparsity,
    }


def train(choice: Choice, key: tuple, masks: Masks, plan: Plan) -> NoReturn:
    """Run the training as a job (a Cancel button stops it at the next progress update), then
    draw the page again: with the result, remembered under ``key``, and without the Cancel
    button; or, after the run reported its error, stop the page there.
    """
    job = jobs.Job(Keys.train_job, key)
    result = jobs.run(
        job,
        lambda _, report: _run(choice, masks, plan, report),
        label="Training",
    )
    if result is None:
        st.stop()
    cache.remember(key, result)
    st.rerun()


def headline_values(result: dict) -> dict[str, float]:
    """The test accuracy (perplexity, for a language model) of the three ways to the same
    sparsity."""
    metric = result["metric"]
    return {
        "one-shot (no training)": result["one-shot"][metric],
        "fine-tuned": result["fine-tuned"][metric],
        f"gradual {result['schedule'].kind}": result["gradual"][metric],
    }


def quantized_rows(choice: Choice, result: dict, key: tuple, bits: list[int]) -> pd.DataFrame:
    """The fine-tuned model as trained and with its kept weights rounded to each of ``bits``
    (each evaluation kept: choosing other bits trains nothing again)."""
    metric = result["metric"]
    tuned = result["fine-tuned"]
    rows = [
        {
            "weights": "float32 (as trained)",
            metric: metric_value(metric, tuned[metric]),
            "loss": f"{tuned['loss']:.4f}",
            "same prediction as float32": percent(1.0),
        }
    ]
    for b in sorted(bits, reverse=True):
        kept = (*key, "quantized", b)
        measured = cache.remembered(kept)
        if measured is None:
            measured = cache.remember(
                kept, training.evaluate_quantized(result["tuned"], choice.data, bits=b)
            )
        rows.append(
            {
                "weights": f"{b} bits",
                metric: metric_value(metric, measured[metric]),
                "loss": f"{measured['loss']:.4f}",
                "same prediction as float32": percent(measured["agreement"]),
            }
        )
    return pd.DataFrame(rows)
