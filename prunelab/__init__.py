"""prunelab: understand and plan neural-network pruning in PyTorch.

Pruning is three separate steps: *score* the prunable tensors with a criterion, *select* masks
by sparsity or threshold, and *apply* them without ever changing the model you gave.

>>> import torch.nn as nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
>>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
>>> round(masks.sparsity(), 2)
0.5
"""

from ._version import __version__
from .apply import apply, bake, masked_forward, masked_weights
from .calibration import Calibration
from .granularity import NM, Granularity, parse_granularity
from .masks import Masks
from .pruner import Pruner, prune
from .strategies import (
    GlobalStrategy,
    Layer,
    LayerwiseStrategy,
    ScoredStrategy,
    Strategy,
    get_strategy,
    list_strategies,
    register_strategy,
    strategy_table,
)
from .targets import Target, targets

__all__ = [
    "NM",
    "Calibration",
    "GlobalStrategy",
    "Granularity",
    "Layer",
    "LayerwiseStrategy",
    "Masks",
    "Pruner",
    "ScoredStrategy",
    "Strategy",
    "Target",
    "__version__",
    "apply",
    "bake",
    "get_strategy",
    "list_strategies",
    "masked_forward",
    "masked_weights",
    "parse_granularity",
    "prune",
    "register_strategy",
    "strategy_table",
    "targets",
]
