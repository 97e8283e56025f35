"""prunelab: understand and plan neural-network pruning in PyTorch.

Pruning is three separate steps: *score* the prunable tensors with a criterion, *select* masks
by sparsity or threshold, and *apply* them without ever changing the model you gave.

The top level holds that pipeline. Everything around it lives in feature namespaces:
``prunelab.io`` (models, data, recipes, export; ``prunelab.zoo`` and ``prunelab.data`` for short),
``prunelab.analysis`` (metrics, FLOPs, speed, storage), ``prunelab.activations``,
``prunelab.sweeps`` (curves, sensitivity, solver), ``prunelab.training`` and
``prunelab.figures``. Names are imported on first use, so ``import prunelab`` is instant.

>>> import torch.nn as nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
>>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
>>> round(masks.sparsity(), 2)
0.5
"""

from . import _compat
from ._lazy import lazy_names
from ._version import __version__

_PIPELINE = {
    "Target": ".core.targets",
    "targets": ".core.targets",
    "Calibration": ".core.calibration",
    "Granularity": ".core.granularity",
    "NM": ".core.granularity",
    "parse_granularity": ".core.granularity",
    "Strategy": ".core.strategies",
    "ScoredStrategy": ".core.strategies",
    "LayerwiseStrategy": ".core.strategies",
    "GlobalStrategy": ".core.strategies",
    "Layer": ".core.selection",
    "get_strategy": ".core.strategies",
    "list_strategies": ".core.strategies",
    "register_strategy": ".core.strategies",
    "strategy_table": ".core.strategies",
    "Masks": ".core.masks",
    "Reconstructed": ".core.sparsegpt",
    "Pruner": ".core.pruner",
    "prune": ".core.pruner",
    "apply": ".core.apply",
    "bake": ".core.apply",
    "masked_forward": ".core.apply",
    "masked_weights": ".core.apply",
    "shrink": ".shrinking",
    "evaluate": ".analysis.evaluation",
    "Recipe": ".io.recipes",
    "explore": ".jupyter.explorer",
}
_NAMESPACES = {
    name: f".{name}:"
    for name in ("activations", "analysis", "errors", "figures", "io", "sweeps", "training")
} | {"zoo": ".io.zoo:", "data": ".io.data:", "shrinking": ".shrinking:"}

# Names the top level offered before the feature namespaces existed; they keep working but are
# not advertised (their homes are the namespaces above).
_EARLIER = {
    "ActivationSparsifier": ".activations",
    "ThresholdActivation": ".activations",
    "activation_stats": ".activations",
    "activation_threshold": ".activations",
    "CheckpointError": ".sweeps",
    "Estimate": ".sweeps",
    "estimate_sensitivity": ".sweeps",
    "estimate_sweep": ".sweeps",
    "sensitivity": ".sweeps",
    "solve": ".sweeps",
    "sweep": ".sweeps",
    "DynamicSparse": ".training",
    "Gradual": ".training",
    "Iterative": ".training",
    "OneShot": ".training",
    "TrainConfig": ".training",
    "fake_quantize": ".training",
    "finetune": ".training",
    "freeze": ".training",
    "prune_while_training": ".training",
    "unfreeze": ".training",
    "flops_by_layer": ".analysis",
    "latency": ".analysis",
    "model_stats": ".analysis",
    "speed_report": ".analysis",
    "storage": ".analysis.storage:",
    "ModelBundle": ".io",
    "Provenance": ".io",
    "export": ".io",
    "coupled_groups": ".shrinking",
    "extend_channel_masks": ".shrinking",
}

__getattr__, __dir__ = lazy_names(__name__, _PIPELINE | _NAMESPACES | _EARLIER)
_compat.install()

__all__ = ["__version__", *_PIPELINE, *_NAMESPACES]
