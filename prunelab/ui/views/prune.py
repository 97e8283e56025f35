"""The Prune page's logic: the strategy's controls, its prepared Pruner, masks and their numbers.

The page lays these out; the controls a strategy gets come from the strategy's description of
its options (:func:`prunelab.core.strategies.strategy_options`), never from its name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st
import torch

from ... import figures
from ...analysis.flops import MaskSummary, mask_summary
from ...core.granularity import Unstructured
from ...core.masks import Masks
from ...core.pruner import Pruner
from ...core.sparsegpt import Reconstructed
from ...io.recipes import Provenance, Recipe
from .. import cache, engine
from ..engine import Choice
from ..errors import failing_as
from ..state import Keys
from ..widgets import StrategyChoice, layer_picker, outputs_option, strategy_picker

__all__ = [
    "Settings",
    "channel_values",
    "compare_masks",
    "controls",
    "evaluates_at_once",
    "implied_threshold",
    "layer_figure",
    "magnitude_cut",
    "metrics",
    "prepare",
    "recipe_builder",
    "reconstruction_note",
    "summary",
    "threshold_range",
]


@dataclass(frozen=True)
class Settings:
    """What the sidebar chose: a strategy with its options, a seed, the layers to prune."""

    strategy: StrategyChoice
    seed: int
    layers: tuple[str, ...]

    @property
    def savable(self) -> bool:
        """Whether a recipe can reproduce the masks: recipes do not carry seeds."""
        return not (self.strategy.build().seeded and self.seed != 0)


def controls(choice: Choice) -> Settings:
    """The strategy menu, a control for each option it offers, a seed for strategies that draw
    random numbers, the layers, and (for output channels) whether the output layer goes too."""
    strategy = strategy_picker()
    seed = 0
    if strategy.build().seeded:
        seed = int(st.number_input("Seed", 0, 10_000, 0, key=Keys.seed))
    layers = layer_picker(choice, strategy)
    strategy = outputs_option(choice, strategy, layers, key=Keys.prune_outputs)
    return Settings(strategy=strategy, seed=seed, layers=layers)


def prepare(choice: Choice, settings: Settings) -> Pruner:
    """The prepared (cached) Pruner; the page's error boundary says why when it cannot be made."""
    with failing_as("This strategy cannot prune these layers"):
        return cache.pruner(
            choice.model_key,
            choice.data_spec,
            settings.strategy.name,
            settings.strategy.options,
            settings.layers,
            settings.seed,
            _choice=choice,
        )


def implied_threshold(pruner: Pruner, sparsity: float) -> str | None:
    """The score threshold a sparsity amounts to, as a caption (None if the strategy has none)."""
    cuts = pruner.implied_thresholds(sparsity)
    if not cuts:
        return None
    values = sorted(set(cuts.values()))
    if len(values) == 1:
        return f"Implied threshold: {values[0]:.4g}"
    return f"Implied threshold: {values[0]:.4g} to {values[-1]:.4g} (per layer)"


def threshold_range(pruner: Pruner) -> tuple[float, float, float]:
    """(low, high, step) of the threshold slider: from 0 (or the lowest score) to the highest."""
    low, high = pruner.score_range() or (0.0, 1.0)
    low = float(min(low, 0.0))
    return low, float(high), (high - low) / 200


def recipe_builder(choice: Choice, pruner: Pruner, settings: Settings, masks: Masks):
    """A callable building the recipe that reproduces ``masks``, or None when no recipe can (a
    seed other than 0). It is built when asked for (download, Export), not on every move."""
    if not settings.savable:
        return None
    provenance = Provenance(
        model=choice.model_key, data=choice.data_spec, left_out=pruner.left_out.note
    )
    return functools.partial(Recipe.from_masks, masks, pruner.strategy, provenance=provenance)


def summary(choice: Choice, masks: Masks) -> MaskSummary:
    """Sparsity, kept weights and FLOPs of ``masks`` (the FLOP table is counted once per model)."""
    return mask_summary(masks, cache.flop_table(choice.model_key, _choice=choice))


def evaluates_at_once(choice: Choice) -> bool:
    """Whether the pruned model is evaluated on every move (small models) or on request."""
    return choice.parameters <= engine.AUTO_EVALUATE_PARAMS


def metrics(choice: Choice, masks: Masks) -> tuple[dict[str, float], dict[str, float]]:
    """(pruned, dense) metrics on the chosen data: accuracy and loss with labels, agreement and
    KL divergence always (both cached)."""
    dense = cache.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
    return cache.evaluate_masks(choice, masks), dense


def magnitude_cut(pruner: Pruner, fqn: str) -> float | None:
    """The weight magnitude at or below which ``fqn``'s weights are pruned, when the strategy's
    scores are the magnitudes themselves and single weights are pruned (None otherwise)."""
    strategy = pruner.strategy
    if not strategy.magnitude_scores or not isinstance(strategy.granularity, Unstructured):
        return None
    if st.session_state.get(Keys.drive, "sparsity") == "threshold":
        return float(st.session_state[Keys.threshold])
    return pruner.implied_thresholds(st.session_state[Keys.sparsity]).get(fqn)


def channel_values(choice: Choice, pruner: Pruner, fqn: str) -> tuple[torch.Tensor, str]:
    """One value per output channel of ``fqn`` and what it is: the strategy's channel scores
    when it ranks channels, else the L1 norm of each channel's weights."""
    scores = pruner.scores().get(fqn)
    if scores is not None and scores.ndim == 1:
        return scores, "score of each output channel (what the strategy ranks)"
    weight = choice.model.get_parameter(fqn).detach()
    if weight.ndim > 1 and engine.out_dim(choice, fqn) == 1:
        weight = weight.movedim(1, 0)
    values = weight.abs().flatten(1).sum(dim=1) if weight.ndim > 1 else weight.abs()
    return values, "L1 norm of each output channel's weights"


def layer_figure(
    view: str, choice: Choice, pruner: Pruner, masks: Masks, fqn: str, *, layout: str = "matrix"
) -> go.Figure:
    """The figure of one layer for ``view`` (weights, mask, histogram, channels), kept per
    layer and what it draws: only the figure on view is built."""
    weight = choice.model.get_parameter(fqn).detach()
    mask = masks[fqn]
    if weight.ndim > 1 and engine.out_dim(choice, fqn) == 1:
        # transposed convolutions store (in, out, ...): show output channels as rows
        weight, mask = weight.movedim(1, 0), mask.movedim(1, 0)
    key = (choice.model_key, fqn, engine.digest(mask))
    if view == "weights":
        return cache.figure(
            ("heatmap", layout, *key),
            _build=lambda: figures.weight_heatmap(weight, mask, layout=layout),
        )
    if view == "mask":
        return cache.figure(("mask", *key), _build=lambda: figures.mask_pattern(mask))
    if view == "histogram":
        cut = magnitude_cut(pruner, fqn)
        return cache.figure(
            ("histogram", choice.model_key, fqn, cut),
            _build=lambda: figures.weight_histogram(weight, threshold=cut),
        )
    if view == "channels":
        values, _ = channel_values(choice, pruner, fqn)
        return cache.figure(
            ("channels", choice.model_key, fqn, engine.digest(values, mask)),
            _build=lambda: figures.channel_magnitudes(values, mask),
        )
    raise ValueError(f"no layer figure {view!r}")


def compare_masks(choice: Choice, settings: Settings, other: str, sparsity: float) -> Masks:
    """Masks of strategy ``other`` (its defaults) on the same layers at ``sparsity`` (or at the
    sparsity its pattern fixes)."""
    other_pruner = cache.pruner(
        choice.model_key, choice.data_spec, other, (), settings.layers, 0, _choice=choice
    )
    if other_pruner.strategy.fixed_sparsity is not None:
        return other_pruner.masks()
    return other_pruner.masks(sparsity=sparsity)


def reconstruction_note(masks: Masks) -> str | None:
    """What a strategy that rewrites weights (SparseGPT) gives, in words; None for masks alone.

    >>> reconstruction_note(Masks({"w": torch.ones(2, dtype=torch.bool)})) is None
    True
    """
    if not isinstance(masks, Reconstructed):
        return None
    return (
        "This strategy's result is **new weights plus masks**, not masks alone: SparseGPT "
        "drops weights layer by layer and updates the kept ones to make up for them, using "
        "the picked data as calibration inputs. The numbers, figures, next tokens and Export "
        "use the new weights; the model you loaded is unchanged, and the masks by themselves "
        "(applied to the original weights) would give a worse model."
    )
