"""The Activations page's logic: which layers, with which weight masks, statistics,
thresholding and the activation sparsifier."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

from ... import figures
from ...activations import INPUT_SUFFIX, LayerStats, activation_layers
from ...core.masks import Masks
from .. import cache, engine
from ..engine import Choice
from ..errors import failing_as
from ..state import Keys

__all__ = [
    "MAX_SAMPLES",
    "MAX_SEQUENCES",
    "OBSERVE_BATCH",
    "PruneMasks",
    "Sparsified",
    "SparsifierSettings",
    "default_layer",
    "describe",
    "input_layers",
    "layer_names",
    "may_sparsify",
    "prune_page_masks",
    "remember_sparsify",
    "samples",
    "sparsify",
    "statistics",
    "threshold_histogram",
    "threshold_limit",
    "thresholded",
]

MAX_SAMPLES = 512  # statistics and effects use the first samples of the data
# a sequence of a language model is a whole context of values per channel (128 for the sample):
# 64 sequences already give thousands of values per channel, and 512 took the page ~50 s
MAX_SEQUENCES = 64


def samples(choice: Choice) -> int:
    """How many of the data's first samples the page's statistics and effects use."""
    return MAX_SEQUENCES if choice.bundle.task == "language-model" else MAX_SAMPLES


OBSERVE_BATCH = 64


@dataclass(frozen=True)
class PruneMasks:
    """The Prune page's weight masks, when they fit the chosen model."""

    masks: Masks
    key: str  # their digest: the cache key of what is computed with them
    label: str | None  # what the Prune page called them


def layer_names(choice: Choice) -> list[str]:
    """Modules whose output, and prunable layers whose input, can be looked into."""
    return activation_layers(choice.model, inputs=True)


def describe(choice: Choice, name: str) -> str:
    """A layer of :func:`layer_names` in words: what enters a layer, or a module's output."""
    module, _, _ = name.partition(INPUT_SUFFIX)
    kind = type(choice.model.get_submodule(module)).__name__
    if name.endswith(INPUT_SUFFIX):
        return f"{name}: what enters {module} ({kind})"
    return f"{name}: output of {kind}"


def default_layer(names: list[str]) -> int:
    """The input of the second prunable layer: the first layer's activations, not the data."""
    inputs = [i for i, n in enumerate(names) if n.endswith(INPUT_SUFFIX)]
    return inputs[1] if len(inputs) > 1 else 0


def input_layers(names: list[str]) -> list[str]:
    """The names that are what enters a layer (what the sparsifier masks)."""
    return [n for n in names if n.endswith(INPUT_SUFFIX)]


def prune_page_masks(choice: Choice) -> PruneMasks | None:
    """The Prune page's masks, or None when there are none or they belong to another model."""
    masks = st.session_state.get(Keys.masks)
    if not isinstance(masks, Masks) or not len(masks) or engine.masks_misfit(choice, masks):
        return None
    return PruneMasks(masks, engine.masks_digest(masks), st.session_state.get(Keys.masks_label))


def statistics(
    choice: Choice, layer: str, masks: PruneMasks | None
) -> tuple[LayerStats, LayerStats | None]:
    """The layer's statistics on the dense model, and with the masks (None without them)."""
    with failing_as(f"Could not collect the activations of {layer}"):
        dense = cache.activations_of(
            choice.model_key,
            choice.data_spec,
            layer,
            None,
            samples(choice),
            _choice=choice,
            _masks=None,
        )
        if masks is None:
            return dense, None
        after = cache.activations_of(
            choice.model_key,
            choice.data_spec,
            layer,
            masks.key,
            samples(choice),
            _choice=choice,
            _masks=masks.masks,
        )
        return dense, after


def threshold_limit(dense: LayerStats) -> float:
    """The threshold slider's end: the layer's largest |value| (fixed while the slider moves)."""
    limit = float(max(dense.max.abs().max(), dense.min.abs().max()))
    return limit if limit > 0 else 1.0


def thresholded(
    choice: Choice, layer: str, threshold: float, masks: PruneMasks | None
) -> dict[str, float]:
    """Sparsity and metrics with the layer's activations below ``threshold`` zeroed."""
    with failing_as(f"Could not threshold {layer}"):
        return cache.threshold_effect(
            choice.model_key,
            choice.data_spec,
            layer,
            float(threshold),
            None if masks is None else masks.key,
            samples(choice),
            _choice=choice,
            _masks=None if masks is None else masks.masks,
        )


def threshold_histogram(
    choice: Choice,
    layer: str,
    masks: PruneMasks | None,
    shown: LayerStats,
    threshold: float,
) -> go.Figure:
    """The histogram of ``shown`` with the threshold's band, kept per layer, masks and
    threshold: a slider moved back to a value draws the kept figure."""
    key = None if masks is None else masks.key
    return cache.figure(
        ("act_threshold", choice.model_key, choice.data_spec, layer, key, threshold),
        _build=lambda: figures.activation_histogram(shown, threshold=threshold),
    )


@dataclass(frozen=True)
class SparsifierSettings:
    """What the activation sparsifier runs with (hashable: a cache key)."""

    module: str
    aggregate: str
    reduce: str
    mask_fn: str
    features: tuple[int, ...] | None
    feature_dim: int | None
    config: tuple[tuple[str, float], ...]  # ("threshold", v) or ("sparsity_level", v)

    @classmethod
    def of(
        cls,
        layer: str,
        dense: LayerStats,
        *,
        aggregate: str,
        reduce: str,
        mask_fn: str,
        per_feature: bool,
        value: float,
    ) -> SparsifierSettings:
        """Settings for what enters ``layer``; ``value`` is the threshold or sparsity level."""
        module, _, _ = layer.partition(INPUT_SUFFIX)
        option = "threshold" if mask_fn == "threshold" else "sparsity_level"
        return cls(
            module=module,
            aggregate=aggregate,
            reduce=reduce,
            mask_fn=mask_fn,
            features=tuple(range(dense.channels)) if per_feature else None,
            feature_dim=dense.channel_axis if per_feature else None,
            config=((option, float(value)),),
        )


def _ran_key(choice: Choice, settings: SparsifierSettings) -> tuple:
    return (choice.model_key, choice.data_spec, settings)


def may_sparsify(choice: Choice, settings: SparsifierSettings) -> bool:
    """Whether to run the sparsifier without asking: at once on small models; on large ones
    (two passes over the data that take seconds each) only for settings already run."""
    if choice.parameters <= engine.AUTO_EVALUATE_PARAMS:
        return True
    return _ran_key(choice, settings) in cache.session_store(Keys.act_sparsified)


def remember_sparsify(choice: Choice, settings: SparsifierSettings) -> None:
    """The user asked to run these settings: run them again without asking."""
    cache.session_store(Keys.act_sparsified).put(_ran_key(choice, settings), True)


@dataclass(frozen=True)
class Sparsified:
    """The sparsifier's mask, the share of positions it keeps, and accuracy with it."""

    mask: object  # a tensor, or a list of per-feature tensors
    kept: float
    accuracy: float | None
    dense_accuracy: float | None


def sparsify(choice: Choice, settings: SparsifierSettings, layer: str) -> Sparsified:
    """Run the activation sparsifier on what enters ``settings.module`` (cached)."""
    with failing_as(f"The sparsifier could not mask what enters {settings.module}"):
        mask, accuracy = cache.sparsifier_mask(
            choice.model_key,
            choice.data_spec,
            settings,
            samples(choice),
            OBSERVE_BATCH,
            _choice=choice,
        )
    parts = mask if isinstance(mask, list) else [mask]
    kept = sum(float(p.float().sum()) for p in parts) / sum(p.numel() for p in parts)
    dense_accuracy = None
    if accuracy is not None:
        dense_accuracy = thresholded(choice, layer, 0.0, None)["dense_accuracy"]
    return Sparsified(mask, kept, accuracy, dense_accuracy)
