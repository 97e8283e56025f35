"""The Model page's logic: the table of prunable tensors, one layer's weights, the memory note."""

from __future__ import annotations

import pandas as pd
import torch

from ...runtime import memory
from .. import cache
from ..engine import Choice

__all__ = ["layer_table", "layer_weight", "memory_note"]


def layer_table(choice: Choice) -> pd.DataFrame:
    """Statistics of each prunable weight, with its share of the prunable layers' FLOPs."""
    stats = cache.weight_table(choice.model_key, _choice=choice)  # st.cache_data: a copy
    flops = cache.flop_table(choice.model_key, _choice=choice).set_index("fqn")["flops"]
    stats.insert(
        4, "share of FLOPs", (flops / max(flops.sum(), 1)).reindex(stats["fqn"]).to_numpy()
    )
    return stats


def layer_weight(choice: Choice, fqn: str) -> torch.Tensor:
    """The weight named ``fqn`` (detached: it is only drawn)."""
    return choice.model.get_parameter(fqn).detach()


def memory_note(choice: Choice) -> str:
    """What the chosen model costs in memory, and how many the server keeps, in a sentence."""
    model = memory.format_bytes(choice.loaded.model_bytes)
    scores = memory.format_bytes(2 * 4 * sum(t.numel for t in choice.loaded.prunable))
    return (
        f"This model takes {model} in memory (parameters + buffers); each prepared strategy "
        f"adds up to {scores} (importance scores and their sorted copy). Models are shared by "
        f"all sessions: the server keeps at most {cache.MAX_MODELS_KEPT} models "
        f"({cache.MAX_MODELS} picked by name, {cache.MAX_UPLOADS} uploads) and "
        f"{cache.MAX_PRUNERS} prepared strategies, and drops the least recently used first."
    )
