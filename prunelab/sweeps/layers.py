"""Per-layer sensitivity: prune one layer at a time at each sparsity and measure the damage.

For a transformer (a model with a repeated-block stack, see :mod:`prunelab.sweeps.blocks`)
every row also names the layer's ``block`` (its number in the stack; -1 outside it) and
``projection`` (``q``, ``k``, ``v``, ``qkv``, ``o``, ``up``, ``gate``, ``down``, or the layer's
own name outside the stack), so the table pivots to a block x projection grid
(:func:`prunelab.figures.block_heatmap`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from ..core.calibration import Calibration
from ..core.pruner import LeftOut, Pruner, chosen_layers
from ..core.strategies import Strategy, get_strategy, strategy_choices
from ..core.targets import Target, get_parameter, resolve_targets
from ..runtime.functional import run_device
from ..runtime.metrics import headline_metric
from .blocks import block_stack, layer_group
from .checkpoints import RowLog, _calibration_id, _fingerprint, _report_resumed, _strategy_id
from .config import (
    DEFAULT_LEVELS,
    LOWER_IS_BETTER,
    Progress,
    RunOptions,
    SensitivityConfig,
    _options,
    check_levels,
)
from .executors import get_executor
from .runner import _BATCH, _by_cut, _Runner, _subset_batches, layer_work

__all__ = ["sensitivity"]


def sensitivity(
    model: nn.Module,
    data: object | None = None,
    *,
    strategy: str | Strategy = "layer-magnitude",
    sparsities: Sequence[float] = DEFAULT_LEVELS,
    config: SensitivityConfig | None = None,
    run: RunOptions | None = None,
) -> pd.DataFrame:
    """Prune one layer at a time at each sparsity and measure the damage.

    With ``method="evaluate"`` (the default) each (layer, sparsity) point masks only that
    layer and evaluates the model on ``data``: masks go through ``functional_call`` on the one
    model, and where the model's top level can be traced the pruned layer's inputs are
    computed once and only the rest of the network reruns (prefix caching); results equal a
    naive loop's. With ``method="magnitude"`` no data is used: the drop is the fraction of the
    layer's squared-weight energy that the pruned weights carry (a data-free proxy, like
    SparseML's magnitude sensitivity).

    With ``run.checkpoint`` (``method="evaluate"``), each finished row is appended to that
    file as the run goes; after an interruption the same call with ``resume=True`` evaluates
    only the missing rows and returns the same table as an uninterrupted run.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (needed for ``method="evaluate"``).
        strategy: How one layer is pruned (a name or a Strategy, e.g. with granularity).
        sparsities: Sparsity levels, each in [0, 1].
        config: Layers, method, metric, early stop, subset and calibration (see
            :class:`~prunelab.sweeps.SensitivityConfig`; None: its defaults).
        run: Device, progress callback, checkpoint and resume (see
            :class:`~prunelab.sweeps.RunOptions`; None: its defaults).

    Returns:
        One row per (layer, sparsity): layer, elements, sparsity, the metrics, drop, evaluated.
        ``attrs`` hold the method, metric and dense baseline.

    >>> from prunelab.sweeps import SensitivityConfig
    >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> config = SensitivityConfig(method="magnitude")
    >>> table = sensitivity(net, sparsities=[0.5], config=config)
    >>> table[["layer", "sparsity"]].values.tolist()
    [['0.weight', 0.5], ['2.weight', 0.5]]
    """
    config = _options(config, SensitivityConfig, "config")
    run = _options(run, RunOptions, "run")
    levels = sorted(check_levels(sparsities))
    if not levels:
        raise ValueError("sensitivity needs at least one sparsity level")
    chosen = resolve_targets(model, config.layers)
    if config.method == "magnitude":
        if run.checkpoint is not None:
            raise ValueError(
                "method='magnitude' evaluates nothing and finishes at once: it takes no checkpoint"
            )
        return _magnitude_proxy(model, chosen, levels, _groups(model, chosen))
    if data is None:
        raise ValueError("method='evaluate' needs data; use method='magnitude' without data")
    run_on = run_device(model, run.device)
    strategy = get_strategy(strategy)
    chosen, skipped = chosen_layers(model, strategy, config.layers, nothing="no layer to analyse")
    chosen = [t for t in chosen if t.fqn not in skipped.fqns]
    metric = config.metric or headline_metric(data)
    batches = _subset_batches(data, config.subset, _BATCH, run_on)
    calibration = config.calibration
    built = bool(strategy.needs) and calibration is None
    if built:
        calibration = Calibration(model, data, device=run.device)
    keys = [{"layer": t.fqn, "sparsity": level} for t in chosen for level in levels]
    fingerprint = {}
    if run.checkpoint is not None:
        fingerprint = {
            **_fingerprint(model, run_on, batches),
            "layers": [t.fqn for t in chosen],
            "sparsities": levels,
            "strategy": _strategy_id(strategy),
            "metric": metric,
            "early_stop": config.early_stop,
            "calibration": _calibration_id([strategy], calibration, built),
        }
    log = RowLog.open(
        run.checkpoint, kind="sensitivity", keys=keys, fingerprint=fingerprint, resume=run.resume
    )
    with log:
        if not log.finished:
            job = _Sensitivity(model, strategy, calibration, levels, metric, config.early_stop)
            job.groups = _groups(model, chosen)
            job.measure(chosen, _Runner(model, batches, run_on), log, run)
            log.finish(job.attrs(skipped))
    return log.table()


def _layer_rows(log: RowLog, first: int, levels: list[float]) -> dict[int, dict]:
    return {i: log.done[i] for i in range(first, first + len(levels)) if i in log.done}


def _drop(metric: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline`` (positive = worse)."""
    return value - baseline if metric in LOWER_IS_BETTER else baseline - value


def _groups(model: nn.Module, layers: list[Target]) -> dict[str, dict]:
    """Each layer's ``block`` and ``projection`` columns, for a model with a block stack."""
    found = block_stack(model)
    if found is None:
        return {}
    groups = {}
    for target in layers:
        group = layer_group(model, target.fqn, found[0])
        block, projection = group if group else (-1, target.fqn.rsplit(".", 2)[-2])
        groups[target.fqn] = {"block": block, "projection": projection}
    return groups


def _magnitude_proxy(
    model: nn.Module, layers: list[Target], levels: list[float], groups: dict[str, dict]
) -> pd.DataFrame:
    rows = []
    for target in layers:
        weight = get_parameter(model, target.fqn).detach().float().abs().flatten()
        energy = np.cumsum(np.sort(weight.square().cpu().numpy()))
        total = float(energy[-1]) if energy.size and energy[-1] > 0 else 1.0
        for level in levels:
            k = round(level * target.numel)
            removed = float(energy[k - 1]) / total if k else 0.0
            rows.append(
                {
                    "layer": target.fqn,
                    **groups.get(target.fqn, {}),
                    "elements": target.numel,
                    "sparsity": level,
                    "energy_removed": removed,
                    "drop": removed,
                    "evaluated": True,
                }
            )
    table = pd.DataFrame(rows)
    table.attrs.update(method="magnitude", metric="energy_removed", baseline=0.0)
    return table


@dataclass
class _Sensitivity:
    """The settings of one sensitivity run, and its loop over (layer, level) points."""

    model: nn.Module
    strategy: Strategy
    calibration: Calibration | None
    levels: list[float]
    metric: str
    early_stop: float | None
    baseline: dict | None = None  # the dense model's metrics, once measured
    groups: dict[str, dict] | None = None  # block and projection per layer (transformers)

    def measure(self, chosen: list[Target], runner: _Runner, log: RowLog, run: RunOptions) -> None:
        """Evaluate the points ``log`` does not hold yet, layers sharing a cut together, on
        ``run``'s executor (a layer's levels go to one worker: its early stop is sequential)."""
        progress = run.progress
        self.baseline = runner.dense_metrics()
        if self.metric not in self.baseline:
            if self.metric == "perplexity" and "accuracy" in self.baseline:
                raise ValueError(
                    "metric 'perplexity' is a language model's: this model's outputs are "
                    "(batch, classes), not per token; use accuracy, loss, agreement or kl"
                )
            raise ValueError(f"metric {self.metric!r} needs labelled data; the data has no labels")
        _report_resumed(log, progress)
        position = {t.fqn: i * len(self.levels) for i, t in enumerate(chosen)}
        todo = [
            t
            for t in _by_cut(chosen, runner)
            if any(position[t.fqn] + j not in log.done for j in range(len(self.levels)))
        ]
        cuts = sorted({c for t in todo if (c := runner.cut_for(t.fqn)) is not None})
        units = [(t, position[t.fqn], _layer_rows(log, position[t.fqn], self.levels)) for t in todo]
        executor = get_executor(run.executor, address=run.address)
        emit = log.receiver(progress, lambda row: f"{row['layer']} at {row['sparsity']:.0%}")
        executor.run(layer_work(self, runner, units, cuts), emit)

    def attrs(self, skipped: LeftOut) -> dict:
        """The finished table's attributes: how it was measured, and the dense baseline."""
        return {
            "granularity": str(self.strategy.granularity),
            "prune_outputs": self.strategy.prune_outputs,
            "left_out": list(skipped.fqns),
            "left_out_reason": skipped.why,
            "method": "evaluate",
            "metric": self.metric,
            "baseline": self.baseline[self.metric],
            "strategy": self.strategy.name,
            "options": strategy_choices(self.strategy),  # what rebuilds it, for its recipes
            "samples": int(self.baseline["samples"]),
        }

    def _layer(
        self, target: Target, first: int, runner: _Runner, log: RowLog, progress: Progress | None
    ) -> None:
        stopped, pruner = False, None
        for j, level in enumerate(self.levels):
            if first + j in log.done:  # from the checkpoint: only its early stop matters
                done = log.done[first + j]
                stopped = not done["evaluated"] or self._past_bound(done["drop"])
                continue
            row = {
                "layer": target.fqn,
                **(self.groups or {}).get(target.fqn, {}),
                "elements": target.numel,
                "sparsity": level,
            }
            if stopped:
                row.update({m: math.nan for m in self.baseline if m != "samples"})
                row.update(drop=math.nan, evaluated=False)
            else:
                if pruner is None:
                    # a pruner of this layer alone: each point computes one mask, not one per layer
                    pruner = Pruner(
                        self.model,
                        self.strategy,
                        targets=[target.fqn],
                        calibration=self.calibration,
                    )
                scores = runner.masked_metrics(target.fqn, pruner.masks(sparsity=level))
                row.update({k: v for k, v in scores.items() if k != "samples"})
                drop = _drop(self.metric, self.baseline[self.metric], scores[self.metric])
                row.update(drop=drop, evaluated=True)
                stopped = self._past_bound(drop)
            log.add(first + j, row)
            if progress is not None:
                progress(len(log.done) / log.total, f"{target.fqn} at {level:.0%}")

    def _past_bound(self, drop: float) -> bool:
        return self.early_stop is not None and drop > self.early_stop
