"""The Prune page's attention-heads section: a heads x layers picture of head importance with
the heads the current masks prune, shown for models with attention layers."""

from __future__ import annotations

import streamlit as st

from ... import figures
from ...core.heads import attention_layers, head_importance, heads_of
from ...core.masks import Masks
from .. import cache, engine
from ..engine import Choice
from ..widgets import explain

__all__ = ["heads_section"]


@st.cache_resource(max_entries=8, show_spinner=False)
def _importance(model_key: str, _choice: Choice) -> dict:
    # weight norms: the same for every mask, so computed once per model
    return head_importance(_choice.model)


def heads_section(choice: Choice, masks: Masks) -> None:
    """Draw the section when the model has attention layers prunelab recognises; else nothing."""
    if not attention_layers(choice.model):
        return
    importance = _importance(choice.model_key, _choice=choice)
    kept = heads_of(choice.model, masks)
    key = (choice.model_key, engine.digest(*kept.values()))
    st.subheader("Attention heads")
    fig = cache.figure(
        ("heads", *key), _build=lambda: figures.head_importance_map(importance, kept)
    )
    st.plotly_chart(fig, key="heads_chart")
    explain(
        f"One cell per attention head ({kept.total()} in {len(kept)} layers), coloured by the "
        "L2 norm of its query, key, value and output weights; crossed heads are pruned by "
        "these masks (all of their output-projection columns are zero). The strategy "
        "head-magnitude prunes whole heads, lowest norm first; Export can then remove them, "
        "leaving fewer heads of the same width."
    )
