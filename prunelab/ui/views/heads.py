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


def heads_section(choice: Choice, pruner: Pruner, masks: Masks) -> None:
    """Draw the section when the model has attention layers prunelab recognises; else nothing.

    The picture needs the head scores, which the (cached) Pruner of a head strategy holds;
    other strategies get a pointer to one instead of scoring heads on every slider move
    (ViT-B/16's attention weights take most of a second)."""
    layers = attention_layers(choice.model)
    if not layers:
        return
    st.subheader("Attention heads")
    if not isinstance(pruner.strategy.granularity, Head):
        explain(
            f"This model has {sum(a.num_heads for a in layers)} attention heads in "
            f"{len(layers)} layers. Choose the strategy head-magnitude to prune whole heads and "
            "see them here, heads x layers."
        )
        return
    kept = heads_of(choice.model, masks)
    key = (choice.model_key, pruner.strategy.name, engine.digest(*kept.values()))
    fig = cache.figure(
        ("heads", *key), _build=lambda: figures.head_importance_map(pruner.scores(), kept)
    )
    st.plotly_chart(fig, key="heads_chart")
    explain(
        f"One cell per attention head ({kept.total()} in {len(kept)} layers), coloured by the "
        "L2 norm of its query, key, value and output weights; crossed heads are pruned by "
        "these masks (all of their output-projection columns are zero). The strategy "
        "head-magnitude prunes whole heads, lowest norm first; Export can then remove them, "
        "leaving fewer heads of the same width."
    )
