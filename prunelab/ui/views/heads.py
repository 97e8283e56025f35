"""The Prune page's attention-heads section: a heads x layers picture of head importance with
the heads the current masks prune, shown for models with attention layers."""

from __future__ import annotations

import streamlit as st

from ... import figures
from ...core.granularity import Head
from ...core.heads import attention_layers, heads_of
from ...core.masks import Masks
from ...core.pruner import Pruner
from .. import cache, engine
from ..engine import Choice
from ..widgets import explain

__all__ = ["heads_section"]

# what each head strategy's colours mean, in a sentence; a registered head strategy without
# an entry is described by its score_name alone
_SCORES = {
    "head-magnitude": (
        "the L2 norm of its query, key, value and output weights (no data: blind to what the "
        "head attends to)"
    ),
    "head-taylor": (
        "how much the loss on the chosen data moves when the head's output is scaled: "
        "|dL/d gate| summed over the calibration batches, each layer divided by its L2 norm "
        "(Michel et al., 2019)"
    ),
}


def heads_section(choice: Choice, pruner: Pruner, masks: Masks) -> None:
    """Draw the section when the model has attention layers prunelab recognises; else nothing.

    The picture needs the head scores, which the (cached) Pruner of a head strategy holds;
    other strategies get a pointer to one instead of scoring heads on every slider move
    (ViT-B/16's attention weights take most of a second)."""
    layers = attention_layers(choice.model)
    if not layers:
        return
    st.subheader("Attention heads")
    strategy = pruner.strategy
    if not isinstance(strategy.granularity, Head):
        explain(
            f"This model has {sum(a.num_heads for a in layers)} attention heads in "
            f"{len(layers)} layers. Choose the strategy head-magnitude (weight norms, no data) "
            "or head-taylor (gradients on the chosen data) to prune whole heads and see them "
            "here, heads x layers."
        )
        return
    kept = heads_of(choice.model, masks)
    score = getattr(strategy, "score_name", "importance")
    scores = pruner.scores()
    # the scores are in the key: head-taylor's change with the data and options, not the model
    key = (choice.model_key, strategy.name, engine.digest(*kept.values(), *scores.values()))
    fig = cache.figure(
        ("heads", *key, score),
        _build=lambda: figures.head_importance_map(
            scores, kept, title=f"Attention heads by {strategy.name}", score=score
        ),
    )
    st.plotly_chart(fig, key="heads_chart")
    explain(
        f"One cell per attention head ({kept.total()} in {len(kept)} layers), coloured by "
        f"{_SCORES.get(strategy.name, score)}; crossed heads are pruned by these masks (all of "
        f"their output-projection columns are zero). The strategy {strategy.name} prunes whole "
        "heads, lowest score first; Export can then remove them, leaving fewer heads of the "
        "same width."
    )
