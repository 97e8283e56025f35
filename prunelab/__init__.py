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

from . import data, storage, zoo
from ._version import __version__
from .activations import (
    ActivationSparsifier,
    ThresholdActivation,
    activation_stats,
    activation_threshold,
)
from .apply import apply, bake, masked_forward, masked_weights
from .calibration import Calibration
from .checkpoint import CheckpointError
from .evaluate import evaluate, flops_by_layer, latency, model_stats
from .export import export
from .granularity import NM, Granularity, parse_granularity
from .masks import Masks
from .pruner import Pruner, prune
from .recipes import Provenance, Recipe
from .shrink import coupled_groups, extend_channel_masks, shrink
from .speed import speed_report
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
from .sweeps import Estimate, estimate_sensitivity, estimate_sweep, sensitivity, solve, sweep
from .targets import Target, targets
from .training import (
    DynamicSparse,
    Gradual,
    Iterative,
    OneShot,
    TrainConfig,
    fake_quantize,
    finetune,
    freeze,
    prune_while_training,
    unfreeze,
)
from .zoo import ModelBundle

__all__ = [
    "NM",
    "ActivationSparsifier",
    "Calibration",
    "CheckpointError",
    "DynamicSparse",
    "Estimate",
    "GlobalStrategy",
    "Gradual",
    "Granularity",
    "Iterative",
    "Layer",
    "LayerwiseStrategy",
    "Masks",
    "ModelBundle",
    "OneShot",
    "Provenance",
    "Pruner",
    "Recipe",
    "ScoredStrategy",
    "Strategy",
    "Target",
    "ThresholdActivation",
    "TrainConfig",
    "__version__",
    "activation_stats",
    "activation_threshold",
    "apply",
    "bake",
    "coupled_groups",
    "data",
    "estimate_sensitivity",
    "estimate_sweep",
    "evaluate",
    "export",
    "extend_channel_masks",
    "fake_quantize",
    "finetune",
    "flops_by_layer",
    "freeze",
    "get_strategy",
    "latency",
    "list_strategies",
    "masked_forward",
    "masked_weights",
    "model_stats",
    "parse_granularity",
    "prune",
    "prune_while_training",
    "register_strategy",
    "sensitivity",
    "shrink",
    "solve",
    "speed_report",
    "storage",
    "strategy_table",
    "sweep",
    "targets",
    "unfreeze",
    "zoo",
]
