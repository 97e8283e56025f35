"""Accuracy-vs-sparsity curves: many mask sets evaluated on one model, never copied."""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, is_dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._version import __version__
from ..analysis.evaluation import evaluate
from ..core.apply import masked_weights
from ..core.calibration import Calibration
from ..core.pruner import LeftOut, Pruner, chosen_layers
from ..core.strategies import Strategy, get_strategy
from ..core.targets import Target, get_parameter, resolve_targets
from ..io.recipes import Provenance, Recipe
from ..runtime.batches import Batch, iter_batches
from ..runtime.checks import check_sparsity
from ..runtime.files import atomic_write, one_line, read_bounded
from ..runtime.functional import functional_forward, run_device
from ..runtime.metrics import (
    METRICS,
    MetricTotals,
    accumulate,
    batch_logits,
    logits_of,
    summarize,
)
from .checkpoints import RowLog, tensor_digest
from .prefix import PrefixPlan

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_LEVELS",
    "Estimate",
    "check_levels",
    "estimate_sensitivity",
    "estimate_sweep",
    "format_duration",
    "load_table",
    "predict_drop",
    "save_table",
    "sensitivity",
    "solve",
    "sweep",
]

Progress = Callable[[float, str], None]


def sweep(
    model: nn.Module,
    data: object,
    *,
    strategies: Sequence[str | Strategy],
    sparsities: Sequence[float],
    calibration: Calibration | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Evaluate each strategy at each sparsity on one fixed evaluation set.

    Masks are applied through ``functional_call`` on the one model (no copies), and each
    strategy's scores are sorted once, so a point costs one forward pass over ``data``.

    With ``checkpoint``, each finished row is appended to that file as the run goes (see
    :mod:`prunelab.checkpoint`); after an interruption the same call with ``resume=True``
    evaluates only the missing rows and returns the same table as an uninterrupted run.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (see :func:`prunelab.analysis.evaluation.evaluate`).
        strategies: Names or Strategy objects.
        sparsities: Sparsities to evaluate, each in [0, 1].
        calibration: For data-driven strategies (default: built from ``data``).
        device: Where to evaluate.
        progress: ``progress(fraction_done, message)`` after each point.
        seed: Seed for random strategies.
        checkpoint: A file for the finished rows; kept when the run completes.
        resume: Continue the run in ``checkpoint`` (refused, saying what differs, if it was
            written with other settings; a finished one just returns its table). Without it
            an existing checkpoint is refused rather than overwritten.

    Returns:
        One row per (strategy, sparsity): strategy, sparsity (achieved), accuracy, loss,
        agreement, kl (those the data allows), nonzeros.

    >>> net = nn.Sequential(nn.Linear(6, 3))
    >>> x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    >>> table = sweep(net, (x, y), strategies=["random"], sparsities=[0.0, 0.5])
    >>> table["sparsity"].tolist()
    [0.0, 0.5]
    """
    levels, chosen = _sweep_grid(strategies, sparsities)
    built = calibration is None and any(s.needs for s in chosen)
    if built:
        calibration = Calibration(model, data, device=device)
    keys = [{"strategy": s.name, "requested": level} for s in chosen for level in levels]
    fingerprint = {}
    if checkpoint is not None:
        run_on = _run_device(model, device)
        fingerprint = {
            **_fingerprint(model, run_on, iter_batches(data, batch_size=128)),
            "strategies": [_strategy_id(s) for s in chosen],
            "sparsities": levels,
            "seed": seed,
            "calibration": _calibration_id(chosen, calibration, built),
        }
    log = RowLog.open(checkpoint, kind="sweep", keys=keys, fingerprint=fingerprint, resume=resume)
    with log:
        if not log.finished:
            _report_resumed(log, progress)
            _sweep_rows(model, data, chosen, levels, log, calibration, device, progress, seed)
            log.finish({})
    return log.table()


MAX_LEVELS = 1000  # sparsity levels of one sweep or sensitivity run (0.001 apart at most)


def check_levels(sparsities: Iterable[float], *, what: str = "sparsities") -> list[float]:
    """Sparsity levels checked once for every run: each in [0, 1], none given twice (a
    repeated level would make two rows with one key, which a checkpoint cannot resume), at
    most :data:`MAX_LEVELS` of them (more is a typo such as a step of 1e-9, not a grid).

    >>> check_levels([0.5, 0.1])
    [0.5, 0.1]
    >>> check_levels([0.5, 0.5])
    Traceback (most recent call last):
    ...
    ValueError: sparsities give 0.5 twice; give each level once
    """
    levels: list[float] = []
    seen: set[float] = set()
    for value in sparsities:
        if len(levels) >= MAX_LEVELS:
            raise ValueError(
                f"{what} give more than {MAX_LEVELS:,} levels; at most {MAX_LEVELS:,} are "
                "evaluated in one run (e.g. 0:1:0.01 gives 101)"
            )
        level = check_sparsity(value, what=f"each of {what}")
        if level in seen:
            raise ValueError(f"{what} give {level} twice; give each level once")
        seen.add(level)
        levels.append(level)
    return levels


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


def _sweep_rows(model, data, chosen, levels, log, calibration, device, progress, seed) -> None:
    for s_index, strategy in enumerate(chosen):
        todo = [
            (s_index * len(levels) + j, level)
            for j, level in enumerate(levels)
            if s_index * len(levels) + j not in log.done
        ]
        if not todo:
            continue  # a resumed run does not even score a strategy it has finished
        pruner = Pruner(
            model, strategy, calibration=calibration if strategy.needs else None, seed=seed
        )
        for index, level in todo:
            masks = (
                pruner.masks()
                if strategy.fixed_sparsity is not None
                else pruner.masks(sparsity=level)
            )
            metrics = evaluate(model, data, masks=masks, device=device)
            kept = int(masks.per_layer()["kept"].sum())
            log.add(
                index,
                {
                    "strategy": strategy.name,
                    "requested": level,
                    "sparsity": masks.sparsity(),
                    **{k: v for k, v in metrics.items() if k != "samples"},
                    "nonzeros": kept,
                },
            )
            if progress is not None:
                progress(len(log.done) / log.total, f"{strategy.name} at {level:.0%}")


def _report_resumed(log: RowLog, progress: Progress | None) -> None:
    if log.done and progress is not None:
        progress(len(log.done) / log.total, f"resumed: {len(log.done)} of {log.total} done")


def _strategy_id(strategy: Strategy) -> str:
    # a frozen dataclass's repr names every option; a strategy's repr may hold an address
    shown = repr(strategy) if is_dataclass(strategy) else type(strategy).__qualname__
    return f"{strategy.name}: {shown}"


def _data_digest(batches: Iterable[Batch]) -> tuple[str, int]:
    """(hash of every input and label, number of samples)."""
    samples = 0

    def named():
        nonlocal samples
        for i, batch in enumerate(batches):
            samples += batch.inputs.shape[0]
            yield f"inputs {i}", batch.inputs
            yield f"labels {i}", batch.labels

    return tensor_digest(named()), samples


def _fingerprint(model: nn.Module, device: torch.device, batches: Iterable[Batch]) -> dict:
    """What every checkpointed run depends on: code, weights, kind of device and data."""
    # results are only reproducible with the same code, weights and kind of device
    data_digest, samples = _data_digest(batches)
    return {
        "prunelab": __version__,
        "model": tensor_digest(model.state_dict().items()),
        "device": device.type,
        "data": data_digest,
        "samples": samples,
    }


def _run_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    return run_device(model, device)


def _calibration_id(
    chosen: Sequence[Strategy], calibration: Calibration | None, built: bool
) -> str | None:
    if calibration is None or not any(s.needs for s in chosen):
        return None
    if built:
        return "the evaluation data"
    return _data_digest(calibration.batches())[0]


@dataclass(frozen=True)
class Estimate:
    """How long a run should take: evaluations x measured seconds per evaluation.

    >>> print(Estimate(evaluations=30, seconds_per_evaluation=2.5))
    30 evaluations x 2.50 s = about 1 min 15 s
    """

    evaluations: int
    seconds_per_evaluation: float

    @property
    def seconds(self) -> float:
        return self.evaluations * self.seconds_per_evaluation

    def remaining(self, done: int) -> Estimate:
        """The estimate for what is left once ``done`` evaluations are finished."""
        return replace(self, evaluations=max(self.evaluations - done, 0))

    def __str__(self) -> str:
        return (
            f"{self.evaluations} evaluations x {format_duration(self.seconds_per_evaluation)} "
            f"= about {format_duration(self.seconds)}"
        )


def format_duration(seconds: float) -> str:
    """A duration for people: ``0.012 s``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``.

    >>> format_duration(0.0123), format_duration(42.4), format_duration(185), format_duration(7800)
    ('0.012 s', '42 s', '3 min 5 s', '2 h 10 min')
    """
    if seconds < 10:
        return f"{seconds:.2g} s" if seconds < 0.1 else f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds) // 60
    if minutes < 60:
        return f"{minutes} min {round(seconds) % 60} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _seconds_per_pass(model: nn.Module, first: Batch, samples: int) -> float:
    """One forward pass over ``samples`` samples, timed on the first batch and scaled."""
    timings = []
    with torch.inference_mode():
        for _ in range(2):  # the first call pays for allocation and warm-up; keep the best
            start = time.perf_counter()
            functional_forward(model, {}, first.inputs)
            if first.inputs.is_cuda:
                torch.cuda.synchronize(first.inputs.device)
            timings.append(time.perf_counter() - start)
    return min(timings) * samples / first.inputs.shape[0]


def estimate_sweep(
    model: nn.Module,
    data: object,
    *,
    strategies: Sequence[str | Strategy],
    sparsities: Sequence[float],
    device: torch.device | str | None = None,
) -> Estimate:
    """How long :func:`sweep` with these settings should take, from two timed forward passes.

    >>> net = nn.Sequential(nn.Linear(6, 3))
    >>> plan = estimate_sweep(net, torch.randn(20, 6), strategies=["random"], sparsities=[0, 1])
    >>> plan.evaluations, plan.seconds < 1
    (2, True)
    """
    levels, chosen = _sweep_grid(strategies, sparsities)
    run_on = _run_device(model, device)
    first, samples = None, 0
    for batch in iter_batches(data, batch_size=128, device=run_on):
        first = batch if first is None else first
        samples += batch.inputs.shape[0]
    if first is None:
        raise ValueError("data is empty: nothing to evaluate")
    return Estimate(len(chosen) * len(levels), _seconds_per_pass(model, first, samples))


_RECORD_BYTES = 256 * 2**20  # cached activations of all cuts at once, at most
_BATCH = 256  # large batches: fewer kernel launches per evaluated point
DEFAULT_LEVELS = tuple(round(0.1 * i, 2) for i in range(1, 10))
_LOWER_IS_BETTER = ("loss", "kl")


def _drop(metric: str, baseline: float, value: float) -> float:
    """How much worse ``value`` is than ``baseline`` (positive = worse)."""
    return value - baseline if metric in _LOWER_IS_BETTER else baseline - value


def _subset_batches(data: object, subset: int | None, batch_size: int, device) -> list[Batch]:
    if subset is not None and subset < 1:
        raise ValueError(f"subset is a number of samples >= 1, got {subset}")
    batches, seen = [], 0
    for batch in iter_batches(data, batch_size=batch_size, device=device):
        if subset is not None and seen + batch.inputs.shape[0] > subset:
            keep = subset - seen
            labels = None if batch.labels is None else batch.labels[:keep]
            batch = Batch(batch.inputs[:keep], labels)
        if batch.inputs.shape[0]:
            batches.append(batch)
        seen += batch.inputs.shape[0]
        if subset is not None and seen >= subset:
            break
    if not batches:
        raise ValueError("sensitivity needs evaluation data; the data (or subset) is empty")
    return batches


def _magnitude_proxy(model: nn.Module, layers: list[Target], levels: list[float]) -> pd.DataFrame:
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


def sensitivity(
    model: nn.Module,
    data: object | None = None,
    *,
    layers: Sequence[str] | None = None,
    sparsities: Sequence[float] = DEFAULT_LEVELS,
    strategy: str | Strategy = "layer-magnitude",
    method: str = "evaluate",
    metric: str = "accuracy",
    early_stop: float | None = None,
    subset: int | None = None,
    calibration: Calibration | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Prune one layer at a time at each sparsity and measure the damage.

    With ``method="evaluate"`` each (layer, sparsity) point masks only that layer and
    evaluates the model on ``data``: masks go through ``functional_call`` on the one model,
    and where the model's top level can be traced the pruned layer's inputs are computed once
    and only the rest of the network reruns (prefix caching); results equal a naive loop's.
    With ``method="magnitude"`` no data is used: the drop is the fraction of the layer's
    squared-weight energy that the pruned weights carry (a data-free proxy, like SparseML's
    magnitude sensitivity).

    With ``checkpoint`` (``method="evaluate"``), each finished row is appended to that file
    as the run goes; after an interruption the same call with ``resume=True`` evaluates only
    the missing rows and returns the same table as an uninterrupted run.

    Args:
        model: The dense model; not modified.
        data: Evaluation data (needed for ``method="evaluate"``).
        layers: fqns or glob patterns of the layers to analyse (default: all targets that
            the strategy supports).
            Layers the strategy leaves out (the model's output layers under channel
            pruning, unless it has ``prune_outputs=True``) are not analysed; ``attrs``
            name them under ``left_out``, with the reason under ``left_out_reason``.
        sparsities: Sparsity levels, each in [0, 1].
        strategy: How one layer is pruned (a name or a Strategy, e.g. with granularity).
        method: ``"evaluate"`` or ``"magnitude"``.
        metric: ``"accuracy"``, ``"loss"``, ``"agreement"`` or ``"kl"``; ``drop`` is how much
            worse it gets than dense (positive = worse).
        early_stop: Stop a layer's sweep once its drop exceeds this (remaining levels are
            reported with ``evaluated=False`` and NaN metrics).
        subset: Use only the first ``subset`` samples (a fixed subset: quick looks).
        calibration: For data-driven strategies.
        device: Where to evaluate.
        progress: ``progress(fraction_done, message)``.
        checkpoint: A file for the finished rows; kept when the run completes.
        resume: Continue the run in ``checkpoint`` (see :func:`sweep`).

    Returns:
        One row per (layer, sparsity): layer, elements, sparsity, the metrics, drop, evaluated.
        ``attrs`` hold the method, metric and dense baseline.

    >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> table = sensitivity(net, method="magnitude", sparsities=[0.5])
    >>> table[["layer", "sparsity"]].values.tolist()
    [['0.weight', 0.5], ['2.weight', 0.5]]
    """
    levels = sorted(check_levels(sparsities))
    if not levels:
        raise ValueError("sensitivity needs at least one sparsity level")
    layers = list(layers) if layers is not None else None
    chosen = resolve_targets(model, layers)
    if method == "magnitude":
        if checkpoint is not None:
            raise ValueError(
                "method='magnitude' evaluates nothing and finishes at once: it takes no checkpoint"
            )
        return _magnitude_proxy(model, chosen, levels)
    if method != "evaluate":
        raise ValueError(f"unknown method {method!r}; accepted: evaluate, magnitude")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
    if data is None:
        raise ValueError("method='evaluate' needs data; use method='magnitude' without data")
    if early_stop is not None and early_stop < 0:
        raise ValueError(f"early_stop is a drop bound >= 0, got {early_stop}")
    run_on = _run_device(model, device)
    strategy = get_strategy(strategy)
    chosen, skipped = chosen_layers(model, strategy, layers, nothing="no layer to analyse")
    chosen = [t for t in chosen if t.fqn not in skipped.fqns]
    batches = _subset_batches(data, subset, _BATCH, run_on)
    built = bool(strategy.needs) and calibration is None
    if built:
        calibration = Calibration(model, data, device=device)
    keys = [{"layer": t.fqn, "sparsity": level} for t in chosen for level in levels]
    fingerprint = {}
    if checkpoint is not None:
        fingerprint = {
            **_fingerprint(model, run_on, batches),
            "layers": [t.fqn for t in chosen],
            "sparsities": levels,
            "strategy": _strategy_id(strategy),
            "metric": metric,
            "early_stop": early_stop,
            "calibration": _calibration_id([strategy], calibration, built),
        }
    log = RowLog.open(
        checkpoint, kind="sensitivity", keys=keys, fingerprint=fingerprint, resume=resume
    )
    with log:
        if not log.finished:
            runner = _Runner(model, batches, run_on)
            baseline = runner.dense_metrics()
            if metric not in baseline:
                raise ValueError(f"metric {metric!r} needs labelled data; the data has no labels")
            _report_resumed(log, progress)
            job = _Sensitivity(model, strategy, calibration, levels, metric, early_stop)
            job.run(chosen, runner, baseline, log, progress)
            log.finish(
                {
                    "granularity": str(strategy.granularity),
                    "prune_outputs": strategy.prune_outputs,
                    "left_out": list(skipped.fqns),
                    "left_out_reason": skipped.why,
                    "method": "evaluate",
                    "metric": metric,
                    "baseline": baseline[metric],
                    "strategy": strategy.name,
                    "samples": int(baseline["samples"]),
                }
            )
    return log.table()


@dataclass(frozen=True)
class _Sensitivity:
    """The settings of one sensitivity run, and its loop over (layer, level) points."""

    model: nn.Module
    strategy: Strategy
    calibration: Calibration | None
    levels: list[float]
    metric: str
    early_stop: float | None

    def run(self, chosen: list[Target], runner: _Runner, baseline: dict, log: RowLog, progress):
        position = {t.fqn: i * len(self.levels) for i, t in enumerate(chosen)}
        todo = [
            t
            for t in _by_cut(chosen, runner)
            if any(position[t.fqn] + j not in log.done for j in range(len(self.levels)))
        ]
        runner.plan_cuts(sorted({c for t in todo if (c := runner.cut_for(t.fqn)) is not None}))
        for target in todo:
            self._layer(target, position[target.fqn], runner, baseline, log, progress)

    def _layer(self, target, first, runner, baseline, log, progress) -> None:
        stopped, pruner = False, None
        for j, level in enumerate(self.levels):
            if first + j in log.done:  # from the checkpoint: only its early stop matters
                done = log.done[first + j]
                stopped = not done["evaluated"] or self._past_bound(done["drop"])
                continue
            row = {"layer": target.fqn, "elements": target.numel, "sparsity": level}
            if stopped:
                row.update({m: math.nan for m in baseline if m != "samples"})
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
                drop = _drop(self.metric, baseline[self.metric], scores[self.metric])
                row.update(drop=drop, evaluated=True)
                stopped = self._past_bound(drop)
            log.add(first + j, row)
            if progress is not None:
                progress(len(log.done) / log.total, f"{target.fqn} at {level:.0%}")

    def _past_bound(self, drop: float) -> bool:
        return self.early_stop is not None and drop > self.early_stop


def estimate_sensitivity(
    model: nn.Module,
    data: object,
    *,
    layers: Sequence[str] | None = None,
    sparsities: Sequence[float] = DEFAULT_LEVELS,
    subset: int | None = None,
    device: torch.device | str | None = None,
    strategy: str | Strategy | None = None,
) -> Estimate:
    """How long :func:`sensitivity` (``method="evaluate"``) should take, at most.

    Counts the (layer, sparsity) points and times a full forward pass over the (subset of
    the) data; prefix caching and early stopping can only make the run shorter. With
    ``strategy``, the layers it leaves out (see :func:`sensitivity`) are not counted.

    >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> estimate_sensitivity(net, torch.randn(20, 6), sparsities=[0.5, 0.9]).evaluations
    4
    """
    levels = check_levels(sparsities)
    layers = list(layers) if layers is not None else None
    if strategy is None:
        chosen = resolve_targets(model, layers)
    else:  # the same layers sensitivity() analyses
        chosen, skipped = chosen_layers(
            model, get_strategy(strategy), layers, nothing="no layer to analyse"
        )
        chosen = [t for t in chosen if t.fqn not in skipped.fqns]
    run_on = _run_device(model, device)
    batches = _subset_batches(data, subset, _BATCH, run_on)
    samples = sum(b.inputs.shape[0] for b in batches)
    return Estimate(len(chosen) * len(levels), _seconds_per_pass(model, batches[0], samples))


def _by_cut(chosen: list[Target], runner: _Runner) -> list[Target]:
    # layers sharing a cut run together, so each cut's cached inputs are computed once
    return sorted(chosen, key=lambda t: runner.cut_for(t.fqn) or 0)


class _Runner:
    """Evaluates masked variants on fixed batches, with prefix caching where possible."""

    def __init__(self, model: nn.Module, batches: list[Batch], device: torch.device) -> None:
        self._model = model
        self._batches = batches
        self._device = device
        # tracing runs the model itself; in training mode that would update its BatchNorm
        # statistics, so a model in training mode is evaluated without prefix caching
        self._plan = None if model.training else PrefixPlan.for_model(model, batches[0].inputs)
        self._cut: int | None = None
        self._live: list[tuple[torch.Tensor, ...]] = []
        self._recorded: dict[int, list[tuple[torch.Tensor, ...]]] = {}
        with torch.inference_mode():
            self._dense = torch.cat([batch_logits(model, {}, b.inputs) for b in batches])

    def cut_for(self, fqn: str) -> int | None:
        return self._plan.cut_for(fqn) if self._plan is not None else None

    def plan_cuts(self, cuts: list[int]) -> None:
        """Record the live values of all ``cuts`` in one dense pass when they fit in memory.

        Otherwise each cut reruns the network up to itself, once, when it is reached.
        """
        if self._plan is None or not cuts:
            return
        first = self._plan.record(cuts, self._batches[0].inputs)
        size = sum(t.numel() * t.element_size() for v in first.values() for t in v)
        if size * len(self._batches) > _RECORD_BYTES:
            return
        per_batch = [first] + [self._plan.record(cuts, b.inputs) for b in self._batches[1:]]
        self._recorded = {cut: [values[cut] for values in per_batch] for cut in cuts}

    def _live_values(self, cut: int) -> list[tuple[torch.Tensor, ...]]:
        if cut in self._recorded:
            return self._recorded.pop(cut)  # each cut is visited once: free it after
        return [self._plan.prefix(cut, b.inputs) for b in self._batches]

    def _score(self, logits: list[torch.Tensor], dense: torch.Tensor | None) -> dict:
        totals = MetricTotals()
        for batch, out in zip(self._batches, logits, strict=True):
            accumulate(totals, out, batch.labels, dense, METRICS)
        return summarize(totals, METRICS, dense=dense is None)

    def dense_metrics(self) -> dict[str, float]:
        chunks = torch.split(self._dense, [b.inputs.shape[0] for b in self._batches])
        return self._score(list(chunks), None)

    def masked_metrics(self, fqn: str, masks) -> dict[str, float]:
        # only the tensors this point actually prunes are swapped in
        overrides = masked_weights(self._model, masks)
        cut = self.cut_for(fqn)
        with torch.inference_mode():
            if cut is None:
                outs = [
                    logits_of(functional_forward(self._model, overrides, b.inputs))
                    for b in self._batches
                ]
            else:
                if cut != self._cut:  # a new cut: cache its live values once
                    self._live = self._live_values(cut)
                    self._cut = cut
                outs = [logits_of(self._plan.suffix(cut, live, overrides)) for live in self._live]
        return self._score(outs, self._dense)


def _drop_curves(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per layer: sparsity levels (with 0), predicted drop (non-decreasing), elements."""
    curves = {}
    for layer, rows in table.groupby("layer", sort=False):
        rows = rows.sort_values("sparsity")
        levels = rows["sparsity"].to_numpy(dtype=float)
        drops = rows["drop"].to_numpy(dtype=float)
        # skipped (early-stopped) points count as too damaging to use
        drops = np.where(np.isnan(drops), np.inf, drops)
        if levels[0] > 0:
            levels, drops = np.r_[0.0, levels], np.r_[0.0, drops]
        # a curve that dips is noise: never predict less damage from pruning more
        curves[layer] = (
            levels,
            np.maximum.accumulate(np.maximum(drops, 0.0)),
            int(rows["elements"].iloc[0]),
        )
    return curves


def predict_drop(table: pd.DataFrame, layers: Mapping[str, float]) -> float:
    """Predicted drop of the metric for per-layer sparsities: the sum of each layer's own
    (interpolated) drop from a sensitivity table. Layers not in ``layers`` count as dense.

    >>> table = pd.DataFrame({"layer": ["a", "a"], "elements": [10, 10],
    ...                       "sparsity": [0.5, 1.0], "drop": [0.1, 0.3]})
    >>> round(predict_drop(table, {"a": 0.75}), 3)
    0.2
    """
    curves = _drop_curves(table)
    unknown = [layer for layer in layers if layer not in curves]
    if unknown:
        raise ValueError(f"layers not in the sensitivity table: {unknown[:5]}")
    return sum(_interp(curves[layer], s) for layer, s in layers.items())


def _interp(curve: tuple[np.ndarray, np.ndarray, int], sparsity: float) -> float:
    levels, drops, _ = curve
    return float(np.interp(sparsity, levels, drops))


def solve(
    table: pd.DataFrame,
    *,
    target_sparsity: float | None = None,
    max_drop: float | None = None,
    min_sparsity: float = 0.0,
    max_sparsity: float = 0.95,
    model: nn.Module | None = None,
    data: object | None = None,
) -> Recipe:
    """Turn a sensitivity table into per-layer sparsities under a budget.

    Greedy on the measured curves: starting from ``min_sparsity`` everywhere, repeatedly
    raise the layer whose next level costs the least predicted drop per pruned weight,
    until the overall sparsity (by elements) reaches ``target_sparsity`` (the last step is
    interpolated so the target is met within one weight per layer), or until one more step
    would push the summed predicted drop above ``max_drop``.

    Single-layer drops do not simply add up, so with ``model`` and ``data`` the joint recipe
    is evaluated once and the recipe's provenance reports predicted and measured values.

    Args:
        table: Output of :func:`sensitivity` (layer, elements, sparsity, drop).
        target_sparsity: Overall fraction of weights to zero.
        max_drop: Largest acceptable predicted drop of the metric.
        min_sparsity: No layer below this.
        max_sparsity: No layer above this.
        model: The dense model, to measure the joint recipe.
        data: Evaluation data, to measure the joint recipe.

    >>> table = pd.DataFrame({"layer": ["a", "a", "b", "b"], "elements": [100, 100, 100, 100],
    ...                       "sparsity": [0.5, 1.0, 0.5, 1.0], "drop": [0.0, 0.1, 0.2, 0.9]})
    >>> solve(table, target_sparsity=0.5, max_sparsity=1.0).layers
    {'a': 1.0, 'b': 0.0}
    """
    if (target_sparsity is None) == (max_drop is None):
        raise ValueError("give exactly one budget: target_sparsity or max_drop")
    missing = {"layer", "elements", "sparsity", "drop"} - set(table.columns)
    if missing:
        raise ValueError(f"not a sensitivity table: missing column(s) {sorted(missing)}")
    low = check_sparsity(min_sparsity, what="min_sparsity")
    high = check_sparsity(max_sparsity, what="max_sparsity")
    if low > high:
        raise ValueError(f"min_sparsity {low} is above max_sparsity {high}")
    if max_drop is not None and (not math.isfinite(max_drop) or max_drop < 0):
        raise ValueError(f"max_drop must be a finite number >= 0, got {max_drop}")
    curves = _drop_curves(table)
    total = sum(e for _, _, e in curves.values())
    goal = None if target_sparsity is None else check_sparsity(target_sparsity) * total
    if goal is not None and goal > high * total + 1e-9:
        raise ValueError(
            f"target_sparsity {target_sparsity} is above max_sparsity {high}: unreachable"
        )

    def predict(layer: str, s: float) -> float:
        return _interp(curves[layer], s)

    current = {layer: low for layer in curves}
    pruned = sum(low * e for _, _, e in curves.values())
    while goal is None or pruned < goal - 1e-9:
        best = None
        for layer, (levels, _, elements) in curves.items():
            # the measured levels up to max_sparsity, and max_sparsity itself (interpolated)
            steps = np.unique(np.r_[levels[levels <= high + 1e-12], min(high, levels[-1])])
            above = steps[steps > current[layer] + 1e-12]
            if above.size == 0:
                continue
            step = float(above[0])
            cost = predict(layer, step) - predict(layer, current[layer])
            rate = cost / ((step - current[layer]) * elements)
            if best is None or rate < best[0]:
                best = (rate, layer, step, elements)
        if best is None or not math.isfinite(best[0]):
            break
        _, layer, step, elements = best
        if max_drop is not None:
            spent = sum(predict(name, s) for name, s in current.items())
            if spent + predict(layer, step) - predict(layer, current[layer]) > max_drop:
                break
        gain = (step - current[layer]) * elements
        if goal is not None and pruned + gain > goal:
            step = current[layer] + (goal - pruned) / elements  # land exactly on the target
            gain = goal - pruned
        current[layer] = step
        pruned += gain
    if goal is not None and pruned < goal - 1e-6:
        raise ValueError(
            f"cannot reach target_sparsity {target_sparsity}: the measured levels (up to "
            f"max_sparsity {high}) allow at most {pruned / total:.4f}"
        )
    predicted_drop = sum(predict(layer, s) for layer, s in current.items())
    attrs = table.attrs
    baseline = attrs.get("baseline")
    metric = attrs.get("metric")
    predicted = None
    if baseline is not None and metric is not None:
        sign = 1 if metric in _LOWER_IS_BETTER else -1
        predicted = float(baseline) + sign * predicted_drop
    recipe = Recipe(
        strategy=attrs.get("strategy", "layer-magnitude"),
        granularity=attrs.get("granularity", "unstructured"),
        layers={layer: round(s, 6) for layer, s in current.items()},
        provenance=Provenance(
            metric=metric,
            baseline=_maybe_float(baseline),
            predicted=predicted,
            left_out=LeftOut(tuple(attrs.get("left_out") or ())).note,
        ),
        prune_outputs=bool(attrs.get("prune_outputs", False)),
    )
    if model is not None and data is not None and metric in METRICS:
        measured = evaluate(model, data, masks=recipe.masks(model), metrics=(metric,))
        recipe = replace(
            recipe, provenance=replace(recipe.provenance, measured=measured.get(metric))
        )
    return recipe


def _maybe_float(value: object) -> float | None:
    return None if value is None else float(value)


_TABLE_TAG = "# prunelab table: "
MAX_TABLE_BYTES = 64 * 2**20  # a sensitivity table of 100 layers x 99 levels is ~1 MB


def save_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a sweep/sensitivity table as CSV, its ``attrs`` on a first comment line; atomic.

    >>> import tempfile, pathlib
    >>> table = pd.DataFrame({"layer": ["a"], "drop": [0.1]})
    >>> table.attrs["metric"] = "accuracy"
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> save_table(table, path)
    >>> load_table(path).attrs["metric"]
    'accuracy'
    """
    text = _TABLE_TAG + json.dumps(table.attrs, default=str) + "\n" + table.to_csv(index=False)
    with atomic_write(path, "w") as handle:
        handle.write(text)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`save_table` (plain CSVs work too, without attrs).

    The attrs (the model and data specs it was measured on) come from the file: treat them as
    untrusted (``zoo.load(..., untrusted=True)``).
    """
    raw = read_bounded(path, "table", MAX_TABLE_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a CSV table (not UTF-8 text): {one_line(exc)}") from None
    first = text.split("\n", 1)[0]
    attrs = {}
    if first.startswith(_TABLE_TAG):
        try:
            attrs = json.loads(first[len(_TABLE_TAG) :])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: the first line's table attributes are not JSON") from exc
    try:
        table = pd.read_csv(io.StringIO(text), comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path} is not a CSV table: {one_line(exc)}") from exc
    table.attrs.update(attrs if isinstance(attrs, dict) else {})
    return table
