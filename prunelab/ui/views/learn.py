"""The Learn page's logic: the toy layer's masks, the patterns compared, layerwise against
global, magnitude against random, and effective FLOPs against measured latency."""

from __future__ import annotations

import pandas as pd
import torch

from ...analysis.speed import Comparison, compare_latency
from ...core.masks import Masks
from ...core.pruner import Pruner, prune
from ...core.strategies import get_strategy
from .. import cache, engine
from ..engine import Choice

__all__ = [
    "CURVE_STRATEGIES",
    "SCOPES",
    "at_level",
    "curves",
    "flops",
    "latency",
    "pattern_masks",
    "scope_masks",
    "toy_masks",
    "toy_weight",
]

SCOPES = ("layer-magnitude", "global-magnitude")  # lesson 3: layerwise against global
CURVE_STRATEGIES = ("layer-magnitude", "random")  # lesson 4
PATTERN = "0.weight"  # the toy layer's one weight


def toy_weight() -> torch.Tensor:
    """The toy layer's weight (16 outputs x 32 inputs)."""
    return cache.toy_layer()[0].weight.detach()


def toy_masks(sparsity: float) -> torch.Tensor:
    """Lesson 1: the toy layer's magnitude mask at ``sparsity``."""
    return prune(cache.toy_layer(), "layer-magnitude", sparsity=sparsity)[PATTERN]


def pattern_masks(sparsity: float) -> dict[str, torch.Tensor]:
    """Lesson 2: the toy layer's masks of each pattern (2:4 is 50% whatever ``sparsity``)."""
    patterns = {
        "unstructured": get_strategy("layer-magnitude"),
        # the toy is one layer, its own output: its rows are what this lesson prunes
        "channel": get_strategy("layer-magnitude", granularity="channel", prune_outputs=True),
        "2:4": get_strategy("n:m"),
    }
    masks = {}
    for name, strategy in patterns.items():
        pruner = Pruner(cache.toy_layer(), strategy)
        masks[name] = (pruner.masks() if name == "2:4" else pruner.masks(sparsity=sparsity))[
            PATTERN
        ]
    return masks


def scope_masks(choice: Choice, strategy: str, sparsity: float) -> Masks:
    """Lesson 3: the chosen model pruned to ``sparsity`` by ``strategy``."""
    return prune(choice.model, strategy, sparsity=sparsity)


def curves(choice: Choice) -> tuple[pd.DataFrame, str, list[float]]:
    """Lesson 4: the sweep of magnitude and random, the metric shown, the levels swept."""
    table = cache.strategy_curves(
        choice.model_key, choice.data_spec, CURVE_STRATEGIES, _choice=choice
    )
    metric = "accuracy" if "accuracy" in table else "agreement"
    return table, metric, sorted(table["requested"].unique())


def at_level(table: pd.DataFrame, metric: str, level: float) -> pd.Series:
    """Lesson 4: each strategy's ``metric`` at ``level``."""
    return table[table["requested"] == level].set_index("strategy")[metric]


def flops(choice: Choice, sparsity: float) -> tuple[Masks, int, int]:
    """Lesson 5: global magnitude masks and the (dense, effective) FLOPs with them."""
    masked = prune(choice.model, "global-magnitude", sparsity=sparsity)
    table = cache.flop_table(choice.model_key, _choice=choice)
    dense, effective = engine.effective_flops(table, masked)
    return masked, dense, effective


def latency(choice: Choice, masks: Masks) -> Comparison:
    """Lesson 5: dense against masked forward passes, warmed up, interleaved, many rounds:
    a difference counts only outside the spread."""
    return compare_latency(
        choice.model, masks, example_input=choice.bundle.example_input(batch_size=16)
    )
