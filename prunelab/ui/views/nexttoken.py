"""The Prune page's next-token box: type text, see the dense and the pruned language model's
most likely next tokens side by side (:func:`prunelab.analysis.generation.compare_next_tokens`).
"""

from __future__ import annotations

import streamlit as st

from ...analysis.generation import compare_next_tokens
from ...core.masks import Masks
from .. import cache
from ..engine import Choice
from ..widgets import explain

__all__ = ["DEFAULT_TEXT", "next_token_box", "shows_next_tokens"]

DEFAULT_TEXT = "A function definition defines a user-defined function"
_KEY = "nexttoken_text"


def shows_next_tokens(choice: Choice) -> bool:
    """Whether the chosen model is a language model with a tokenizer (the box has a use)."""
    return choice.bundle.task == "language-model" and choice.bundle.tokenizer is not None


def next_token_box(choice: Choice, masks: Masks) -> None:
    """Draw the box for ``masks`` (nothing for models that are not language models)."""
    if not shows_next_tokens(choice):
        return
    with st.expander("Next-token predictions", expanded=True):
        text = st.text_input("Text", DEFAULT_TEXT, key=_KEY, max_chars=2_000)
        dense = cache.dense_next_tokens(choice.model_key, text, _choice=choice)
        table = compare_next_tokens(
            choice.model, choice.bundle.tokenizer, text, masks=masks, top=len(dense), dense=dense
        )
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "dense p": st.column_config.ProgressColumn(format="percent", max_value=1),
                "pruned p": st.column_config.ProgressColumn(format="percent", max_value=1),
            },
        )
        explain(
            "The five tokens each model finds most likely to come next, with their "
            "probabilities: the dense model on the left, the pruned one (these masks) on the "
            "right. ␣ is a space, ↵ a line break. A pruned model that keeps the dense model's "
            "choices in the same order has lost little on this text."
        )
