"""Sweeps: accuracy against sparsity, per-layer sensitivity, and a recipe solved from it.

``sweep`` draws metric-vs-sparsity curves for several strategies; ``sensitivity`` prunes one
layer at a time (reusing everything before it, see :mod:`.prefix`); ``solve`` turns sensitivity
into per-layer sparsities under a budget. Long runs keep their finished rows in checkpoints
(:mod:`.checkpoints`) and can be estimated before they start.
"""

from .._lazy import lazy_names

_NAMES = {
    name: ".curves"
    for name in (
        "DEFAULT_LEVELS",
        "Estimate",
        "estimate_sensitivity",
        "estimate_sweep",
        "load_table",
        "predict_drop",
        "save_table",
        "sensitivity",
        "solve",
        "sweep",
    )
} | {"CheckpointError": ".checkpoints", "checkpoint_status": ".checkpoints"}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
