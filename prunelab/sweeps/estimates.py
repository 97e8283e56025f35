"""How long a sweep or sensitivity run should take, measured before it starts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.pruner import chosen_layers
from ..core.strategies import Strategy, get_strategy
from ..core.targets import resolve_targets
from ..runtime.batches import Batch, iter_batches
from ..runtime.functional import functional_forward, run_device
from .config import DEFAULT_LEVELS, SensitivityConfig, _options, check_levels
from .curves import _sweep_grid
from .runner import _BATCH, _subset_batches

__all__ = ["Estimate", "estimate_sensitivity", "estimate_sweep", "format_duration"]


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
    """How long :func:`~prunelab.sweeps.sweep` with these settings should take, from two timed
    forward passes.

    >>> net = nn.Sequential(nn.Linear(6, 3))
    >>> plan = estimate_sweep(net, torch.randn(20, 6), strategies=["random"], sparsities=[0, 1])
    >>> plan.evaluations, plan.seconds < 1
    (2, True)
    """
    levels, chosen = _sweep_grid(strategies, sparsities)
    run_on = run_device(model, device)
    first, samples = None, 0
    for batch in iter_batches(data, batch_size=128, device=run_on):
        first = batch if first is None else first
        samples += batch.inputs.shape[0]
    if first is None:
        raise ValueError("data is empty: nothing to evaluate")
    return Estimate(len(chosen) * len(levels), _seconds_per_pass(model, first, samples))


def estimate_sensitivity(
    model: nn.Module,
    data: object,
    *,
    strategy: str | Strategy | None = None,
    sparsities: Sequence[float] = DEFAULT_LEVELS,
    config: SensitivityConfig | None = None,
    device: torch.device | str | None = None,
) -> Estimate:
    """How long :func:`~prunelab.sweeps.sensitivity` (``method="evaluate"``) should take, at
    most.

    Counts the (layer, sparsity) points and times a full forward pass over the (subset of
    the) data; prefix caching and early stopping can only make the run shorter. Of
    ``config`` only the layers and the subset count. With ``strategy``, the layers it leaves
    out (see :func:`~prunelab.sweeps.sensitivity`) are not counted.

    >>> net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> estimate_sensitivity(net, torch.randn(20, 6), sparsities=[0.5, 0.9]).evaluations
    4
    """
    config = _options(config, SensitivityConfig, "config")
    levels = check_levels(sparsities)
    if strategy is None:
        chosen = resolve_targets(model, config.layers)
    else:  # the same layers sensitivity() analyses
        chosen, skipped = chosen_layers(
            model, get_strategy(strategy), config.layers, nothing="no layer to analyse"
        )
        chosen = [t for t in chosen if t.fqn not in skipped.fqns]
    run_on = run_device(model, device)
    batches = _subset_batches(data, config.subset, _BATCH, run_on)
    samples = sum(b.inputs.shape[0] for b in batches)
    return Estimate(len(chosen) * len(levels), _seconds_per_pass(model, batches[0], samples))
