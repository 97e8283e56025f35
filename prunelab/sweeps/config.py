"""The options of sweep and sensitivity runs, grouped as ``TrainConfig`` groups training's.

What a run varies stays a direct keyword (``strategies`` or ``strategy``, and ``sparsities``);
:class:`SweepConfig` and :class:`SensitivityConfig` hold what else decides the numbers, and
:class:`RunOptions` how a run is carried out: on which device, reporting progress to whom,
kept in which checkpoint. The sparsity grid of every run is checked by :func:`check_levels`.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch

from ..runtime.checks import check_sparsity
from ..runtime.metrics import LOWER_IS_BETTER, METRICS  # noqa: F401 (its home is metrics)

if TYPE_CHECKING:
    from ..core.calibration import Calibration
    from ..core.targets import Target
    from .executors import Executor

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_LEVELS",
    "RunOptions",
    "SensitivityConfig",
    "SweepConfig",
    "check_levels",
]

Progress = Callable[[float, str], None]
_T = TypeVar("_T")

MAX_LEVELS = 1000  # sparsity levels of one sweep or sensitivity run (0.001 apart at most)
DEFAULT_LEVELS = tuple(round(0.1 * i, 2) for i in range(1, 10))
METHODS = ("evaluate", "magnitude")


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


def _options(value: _T | None, kind: type[_T], name: str) -> _T:
    """``value``, or the defaults of ``kind`` for None; anything else is refused at once."""
    if value is None:
        return kind()
    # a tuple or dict where a config belongs would fail far away, on a missing attribute
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a sweep or sensitivity run is carried out; none of it changes the numbers.

    Attributes:
        device: Where to evaluate (default: where the model is).
        progress: ``progress(fraction_done, message)`` after each point.
        checkpoint: A file for the finished rows, appended as the run goes and kept when it
            completes (see :mod:`prunelab.sweeps.checkpoints`).
        resume: Continue the run in ``checkpoint`` (refused, saying what differs, if it was
            written with other settings; a finished one just returns its table). Without it
            an existing checkpoint is refused rather than overwritten.
        executor: Where the rows are evaluated: ``"in-process"`` (None, the default),
            ``"ray"`` (a Ray cluster: ``pip install "prunelab[ray]"``), or an executor
            object such as :class:`~prunelab.sweeps.executors.RayExecutor`. Either executor
            gives the same table and checkpoint rows, so a run resumes with the other.
        address: With ``executor="ray"``: the cluster's head (``HOST:6379``); None: a
            local cluster, started for the run.

    >>> RunOptions(checkpoint="sens.jsonl", resume=True).resume
    True
    >>> RunOptions(executor="ray", address="10.0.0.5:6379").address
    '10.0.0.5:6379'
    """

    device: torch.device | str | None = None
    progress: Progress | None = None
    checkpoint: str | os.PathLike | None = None
    resume: bool = False
    executor: str | Executor | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        from .executors import get_executor  # checks the choice now, imports no Ray

        get_executor(self.executor, address=self.address)
        if self.progress is not None and not callable(self.progress):
            raise TypeError(
                f"progress must be a function of (fraction, message), got {self.progress!r}"
            )
        if not isinstance(self.resume, bool):
            raise TypeError(f"resume must be True or False, got {self.resume!r}")


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """What a sweep's strategies are given besides the model.

    Attributes:
        calibration: For data-driven strategies (default: built from the evaluation data).
        seed: Seed for random strategies.

    >>> SweepConfig(seed=3).seed
    3
    """

    calibration: Calibration | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {self.seed!r}")


@dataclass(frozen=True, kw_only=True)
class SensitivityConfig:
    """What a sensitivity run measures, besides its strategy and sparsity levels.

    Attributes:
        layers: fqns or glob patterns of the layers to analyse (default: all targets that
            the strategy supports). Layers the strategy leaves out (the model's output
            layers under channel pruning, unless it has ``prune_outputs=True``) are not
            analysed; the table's ``attrs`` name them under ``left_out``, with the reason
            under ``left_out_reason``.
        method: ``"evaluate"`` (prune each layer and evaluate) or ``"magnitude"`` (a
            data-free proxy: the share of the layer's squared-weight energy removed).
        metric: ``"accuracy"``, ``"loss"``, ``"agreement"``, ``"kl"`` or ``"perplexity"``;
            ``drop`` is how much worse it gets than dense (positive = worse: a rise for loss,
            kl and perplexity). None: ``"perplexity"`` for token data (a language model),
            else ``"accuracy"``. The magnitude proxy ignores it.
        early_stop: Stop a layer's sweep once its drop exceeds this (remaining levels are
            reported with ``evaluated=False`` and NaN metrics).
        subset: Use only the first ``subset`` samples (a fixed subset: quick looks).
        calibration: For data-driven strategies (default: built from the evaluation data).

    >>> SensitivityConfig(layers="fc*", subset=200).layers
    ('fc*',)
    """

    layers: Sequence[str | Target] | None = None
    method: str = "evaluate"
    metric: str | None = None
    early_stop: float | None = None
    subset: int | None = None
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
            object.__setattr__(self, "layers", layers)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; accepted: {', '.join(METHODS)}")
        chosen = self.metric
        if self.method == "evaluate" and chosen is not None and chosen not in METRICS:
            # (the magnitude proxy has its own metric)
            raise ValueError(f"unknown metric {self.metric!r}; accepted: {', '.join(METRICS)}")
        if self.early_stop is not None and (
            not isinstance(self.early_stop, numbers.Real) or self.early_stop < 0
        ):
            raise ValueError(f"early_stop is a drop bound >= 0, got {self.early_stop}")
        if self.subset is not None and (
            isinstance(self.subset, bool)
            or not isinstance(self.subset, numbers.Integral)
            or self.subset < 1
        ):
            raise ValueError(f"subset is a number of samples >= 1, got {self.subset}")
