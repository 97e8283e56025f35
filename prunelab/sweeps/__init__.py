"""Sweeps: accuracy against sparsity, per-layer sensitivity, and a recipe solved from it.

``sweep`` draws metric-vs-sparsity curves for several strategies (:mod:`.curves`);
``sensitivity`` prunes one layer at a time (:mod:`.layers`, reusing everything before the
layer: :mod:`.runner`, :mod:`.prefix`); ``solve`` turns sensitivity into per-layer sparsities
under a budget (:mod:`.solver`, :mod:`.budgets`), and ``plan`` checks its prediction against
joint measurements and re-solves (:mod:`.planner`, :mod:`.interplay`); ``allocations`` holds
the known per-layer allocations it is compared with (:mod:`.allocations`). Their options
are grouped in :mod:`.config`
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
    "Budget": ".budgets",
    "Costs": ".budgets",
    "LatencyProfile": ".budgets",
    "DropModel": ".interplay",
    "Plan": ".planner",
    "PlanConfig": ".planner",
    "PlanStep": ".planner",
    "interplay_note": ".planner",
    "plan": ".planner",
    "predict": ".planner",
    "predict_drop": ".solver",
    "solve": ".solver",
    "load_table": ".tables",
    "save_table": ".tables",
}
__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
