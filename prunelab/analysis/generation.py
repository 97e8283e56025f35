"""What a language model predicts next: the dense model's top tokens beside the pruned one's.

The pruned model is run through :func:`prunelab.core.apply.masked_forward` (the masked weights
swapped in for one call), so the model given is never modified and one model serves both
columns.

>>> import transformers, prunelab
>>> from prunelab.io.zoo import load
>>> bundle = load("sample:pydoc-gpt")
>>> masks = prunelab.prune(bundle.model, "layer-magnitude", sparsity=0.5)
>>> table = compare_next_tokens(bundle.model, bundle.tokenizer, "The for statement", masks=masks)
>>> list(table.columns)
['rank', 'dense', 'dense p', 'pruned', 'pruned p']
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..core.apply import masked_forward
from ..core.masks import Masks
from ..runtime.metrics import logits_of

__all__ = ["compare_next_tokens", "max_positions", "next_tokens", "show_token"]

MAX_TEXT = 2_000  # characters read from a text box: far more than a 128-token context holds


def show_token(text: str) -> str:
    """A token's text with its spaces and line breaks made visible (``' for'`` -> ``'␣for'``).

    >>> show_token(" for\\n")
    '␣for↵'
    """
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def _context_ids(model: nn.Module, tokenizer: object, text: str) -> torch.Tensor:
    ids = list(tokenizer(text[-MAX_TEXT:])["input_ids"]) if text else []
    if not ids:  # nothing typed: predict the start of a text
        start = getattr(tokenizer, "bos_token_id", None)
        ids = [start if start is not None else 0]
    context = max_positions(getattr(model, "config", None))
    if context is not None:
        ids = ids[-context:]  # the model sees at most its context: keep the latest tokens
    return torch.tensor([ids], dtype=torch.long)


def max_positions(config: object) -> int | None:
    """The most positions a Hugging Face config says its model takes (None if it does not say).

    >>> from types import SimpleNamespace
    >>> max_positions(SimpleNamespace(max_position_embeddings=512)), max_positions(None)
    (512, None)
    """
    keys = ("n_positions", "max_position_embeddings", "n_ctx")
    return next((v for k in keys if isinstance(v := getattr(config, k, None), int)), None)


def _last_logits(output: object) -> torch.Tensor:
    try:
        logits = logits_of(output)
    except ValueError:
        logits = None
    if logits is None or logits.ndim != 3:
        raise ValueError(
            "next-token predictions need a causal language model (logits of shape "
            "(batch, tokens, vocabulary))"
        )
    return logits[0, -1]


def next_tokens(
    model: nn.Module,
    tokenizer: object,
    text: str,
    *,
    masks: Masks | None = None,
    top: int = 5,
) -> list[tuple[str, float]]:
    """The ``top`` most likely next tokens after ``text`` and their probabilities.

    Args:
        model: A causal language model (a Hugging Face ``...ForCausalLM``); not modified.
        tokenizer: Its tokenizer (``ModelBundle.tokenizer``).
        text: The text so far; its last tokens up to the model's context are used.
        masks: Masks to run the model with (None: the dense model).
        top: How many tokens.

    Returns:
        ``(token text, probability)`` pairs, most likely first.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    ids = _context_ids(model, tokenizer, text)
    with torch.no_grad():
        output = model(ids) if masks is None else masked_forward(model, masks, ids)
    probabilities = torch.softmax(_last_logits(output), dim=-1)
    values, indices = probabilities.topk(min(top, probabilities.numel()))
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(values, indices, strict=True)]


def compare_next_tokens(
    model: nn.Module,
    tokenizer: object,
    text: str,
    *,
    masks: Masks,
    top: int = 5,
    dense: list[tuple[str, float]] | None = None,
) -> pd.DataFrame:
    """The dense and the pruned model's top next tokens side by side, one row per rank.

    Token texts are shown with :func:`show_token` (spaces as ``␣``, line breaks as ``↵``).
    ``dense``: the dense model's :func:`next_tokens` for ``text`` when already known (the app
    keeps them, so a slider move runs only the pruned model).
    """
    if dense is None:
        dense = next_tokens(model, tokenizer, text, top=top)
    pruned = next_tokens(model, tokenizer, text, masks=masks, top=top)
    return pd.DataFrame(
        {
            "rank": range(1, len(dense) + 1),
            "dense": [show_token(t) for t, _ in dense],
            "dense p": [p for _, p in dense],
            "pruned": [show_token(t) for t, _ in pruned],
            "pruned p": [p for _, p in pruned],
        }
    )
