"""Accuracy-vs-sparsity curves: many mask sets evaluated on one model, never copied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd
from torch import nn

from ..analysis.evaluation import evaluate
from ..core.calibration import Calibration
from ..core.pruner import Pruner
from ..core.strategies import Strategy, get_strategy
from ..runtime.batches import iter_batches
from ..runtime.functional import run_device
from .checkpoints import RowLog, _calibration_id, _fingerprint, _report_resumed, _strategy_id
from .config import RunOptions, SweepConfig, _options, check_levels
from .executors import Work, get_executor

__all__ = ["sweep"]


def sweep(
    model: nn.Module,
    data: object,
    *,
    strategies: Sequence[str | Strategy],
    sparsities: Sequence[float],
    config: SweepConfig | None = None,
    run: RunOptions | None = None,
) -> pd.DataFrame:
    """Evaluate each strategy at each sparsity on one fixed evaluation set.

    Masks are applied through ``functional_call`` on the one model (no copies), and each
    strategy's scores are sorted once, so a point costs one forward pass over ``data``.

    With ``run.checkpoint``, each finished row is appended to that file as the run goes (see
    :mod:`prunelab.sweeps.checkpoints`); after an interruption the same call with
    ``resume=True`` evaluates only the missing rows and returns the same table as an
    uninterrupted run.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (see :func:`prunelab.analysis.evaluation.evaluate`).
        strategies: Names or Strategy objects.
        sparsities: Sparsities to evaluate, each in [0, 1].
        config: Calibration for data-driven strategies (default: built from ``data``) and
            the seed of random ones (see :class:`~prunelab.sweeps.SweepConfig`).
        run: Device, progress callback, checkpoint and resume (see
            :class:`~prunelab.sweeps.RunOptions`; None: its defaults).

    Returns:
        One row per (strategy, sparsity): strategy, sparsity (achieved), accuracy, loss,
        agreement, kl (those the data allows), nonzeros.

    >>> import torch
    >>> net = nn.Sequential(nn.Linear(6, 3))
    >>> x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    >>> table = sweep(net, (x, y), strategies=["random"], sparsities=[0.0, 0.5])
    >>> table["sparsity"].tolist()
    [0.0, 0.5]
    """
    config = _options(config, SweepConfig, "config")
    run = _options(run, RunOptions, "run")
    levels, chosen = _sweep_grid(strategies, sparsities)
    built = config.calibration is None and any(s.needs for s in chosen)
    if built:
        config = replace(config, calibration=Calibration(model, data, device=run.device))
    keys = [{"strategy": s.name, "requested": level} for s in chosen for level in levels]
    fingerprint = {}
    if run.checkpoint is not None:
        run_on = run_device(model, run.device)
        fingerprint = {
            **_fingerprint(model, run_on, iter_batches(data, batch_size=128)),
            "strategies": [_strategy_id(s) for s in chosen],
            "sparsities": levels,
            "seed": config.seed,
            "calibration": _calibration_id(chosen, config.calibration, built),
        }
    log = RowLog.open(
        run.checkpoint, kind="sweep", keys=keys, fingerprint=fingerprint, resume=run.resume
    )
    with log:
        if not log.finished:
            _report_resumed(log, run.progress)
            _sweep_rows(model, data, chosen, levels, log, config, run)
            log.finish({})
    return log.table()


def _sweep_grid(
    strategies: Sequence[str | Strategy], sparsities: Sequence[float]
) -> tuple[list[float], list[Strategy]]:
    levels = check_levels(sparsities)
    chosen = [get_strategy(s) for s in strategies]
    if not chosen or not levels:
        raise ValueError("sweep needs at least one strategy and one sparsity")
    names = [s.name for s in chosen]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(
            f"strategies give {twice} twice; give each once (rows are keyed by strategy name)"
        )
    return levels, chosen


def _sweep_rows(
    model: nn.Module,
    data: object,
    chosen: list[Strategy],
    levels: list[float],
    log: RowLog,
    config: SweepConfig,
    run: RunOptions,
) -> None:
    # one unit per row, strategy by strategy: a worker scores a strategy once, when it first
    # meets it (a resumed run does not even score a strategy it has finished)
    units = [
        (s_index, s_index * len(levels) + j, level)
        for s_index in range(len(chosen))
        for j, level in enumerate(levels)
        if s_index * len(levels) + j not in log.done
    ]
    shared = _SweepShared(model, data, chosen, config, run.device)
    emit = log.receiver(run.progress, lambda row: f"{row['strategy']} at {row['requested']:.0%}")
    executor = get_executor(run.executor, address=run.address)
    executor.run(Work(shared=shared, start=_sweep_worker, units=units), emit)


@dataclass
class _SweepShared:
    """What every worker of a sweep needs; sent to a cluster with the data as batches."""

    model: nn.Module
    data: object
    chosen: list[Strategy]
    config: SweepConfig
    device: object

    def __getstate__(self) -> dict:
        # whatever form the data has (a DataLoader, a dataset), workers get the very batches
        # evaluate() reads here (its default batch size), so the numbers are the same
        batches = [(b.inputs, b.labels) for b in iter_batches(self.data, batch_size=128)]
        return {**vars(self), "data": [b if b[1] is not None else b[:1] for b in batches]}


def _sweep_worker(shared: _SweepShared):
    pruners: dict[int, Pruner] = {}

    def evaluate_row(unit: tuple, emit) -> None:
        s_index, index, level = unit
        strategy = shared.chosen[s_index]
        if s_index not in pruners:
            pruners.clear()  # one strategy's scores held at a time
            calibration = shared.config.calibration if strategy.needs else None
            pruners[s_index] = Pruner(
                shared.model, strategy, calibration=calibration, seed=shared.config.seed
            )
        pruner = pruners[s_index]
        masks = (
            pruner.masks() if strategy.fixed_sparsity is not None else pruner.masks(sparsity=level)
        )
        metrics = evaluate(shared.model, shared.data, masks=masks, device=shared.device)
        kept = int(masks.per_layer()["kept"].sum())
        emit(
            index,
            {
                "strategy": strategy.name,
                "requested": level,
                "sparsity": masks.sparsity(),
                **{k: v for k, v in metrics.items() if k != "samples"},
                "nonzeros": kept,
            },
        )

    return evaluate_row
