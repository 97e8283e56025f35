"""Sweeps: accuracy against sparsity, per-layer sensitivity, and a recipe solved from it.

``sweep`` draws metric-vs-sparsity curves for several strategies (:mod:`.curves`);
``sensitivity`` prunes one layer at a time (:mod:`.layers`, reusing everything before the
layer: :mod:`.runner`, :mod:`.prefix`); ``solve`` turns sensitivity into per-layer sparsities
under a budget (:mod:`.solver`). Their options are grouped in :mod:`.config`
(``SweepConfig``, ``SensitivityConfig``, ``RunOptions``). Long runs keep their finished rows
in checkpoints (:mod:`.checkpoints`) and can be estimated before they start
(:mod:`.estimates`); tables are saved and loaded by :mod:`.tables`.
"""

from .._lazy import lazy_names

_NAMES = {
    "CheckpointError": ".checkpoints",
    "checkpoint_status": ".checkpoints",
    "DEFAULT_LEVELS": ".config",
    "RunOptions": ".config",
    "SensitivityConfig": ".config",
    "SweepConfig": ".config",
    "sweep": ".curves",
    "Estimate": ".estimates",
    "estimate_sensitivity": ".estimates",
    "estimate_sweep": ".estimates",
    "sensitivity": ".layers",
    "predict_drop": ".solver",
    "solve": ".solver",
    "load_table": ".tables",
    "save_table": ".tables",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
