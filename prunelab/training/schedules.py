"""Pruning schedules: when masks are (re)selected during training, and at which sparsity.

:class:`OneShot` prunes once; :class:`Iterative` prunes, fine-tunes and repeats;
:class:`Gradual` raises the sparsity linearly or on the cubic schedule of Zhu & Gupta (2017);
:class:`DynamicSparse` keeps the sparsity and drops and regrows weights (SET, RigL).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import pandas as pd

from ..runtime.checks import check_count, check_fraction, check_sparsity

__all__ = ["DynamicSparse", "Gradual", "Iterative", "OneShot", "Schedule"]

KINDS = ("linear", "cubic")
REGROW = ("random", "gradient")


class Schedule:
    """When masks are (re)selected and at which sparsity.

    A schedule answers :meth:`sparsity_at` for any step (the sparsity in force after the
    masks were last updated) and :meth:`update_steps` (the steps at which
    :func:`prune_while_training` selects masks anew).
    """

    kind: ClassVar[str] = "schedule"

    def sparsity_at(self, step: int) -> float:
        raise NotImplementedError

    def update_steps(self, total: int) -> list[int]:
        raise NotImplementedError

    @property
    def final(self) -> float:
        raise NotImplementedError

    def last_step(self) -> int:
        """The step at which the final sparsity is reached."""
        return 0

    def table(self, total: int) -> pd.DataFrame:
        """``step`` and ``sparsity`` for every step in ``range(total + 1)`` (for plotting)."""
        total = check_count(total, what="total")
        steps = list(range(total + 1))
        return pd.DataFrame({"step": steps, "sparsity": [self.sparsity_at(s) for s in steps]})

    def label(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class OneShot(Schedule):
    """Prune once before training to ``sparsity``, then fine-tune.

    >>> OneShot(0.9).sparsity_at(0), OneShot(0.9).update_steps(100)
    (0.9, [0])
    """

    sparsity: float

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, what="sparsity")

    def sparsity_at(self, step: int) -> float:
        check_count(step, what="step", minimum=0)
        return float(self.sparsity)

    def update_steps(self, total: int) -> list[int]:
        return [0]

    @property
    def final(self) -> float:
        return float(self.sparsity)

    def label(self) -> str:
        return f"one-shot {self.sparsity:.0%}"


@dataclass(frozen=True)
class Iterative(Schedule):
    """Prune, fine-tune, repeat: at ``steps[i]`` prune to ``sparsities[i]``.

    Before the first step the model is dense.

    Args:
        steps: Increasing training steps at which to prune (the first is usually 0).
        sparsities: Non-decreasing sparsities, one per step.

    >>> s = Iterative(steps=(0, 10, 20), sparsities=(0.5, 0.75, 0.9))
    >>> [s.sparsity_at(t) for t in (0, 9, 10, 25)]
    [0.5, 0.5, 0.75, 0.9]
    """

    steps: tuple[int, ...]
    sparsities: tuple[float, ...]

    def __post_init__(self) -> None:
        steps = tuple(check_count(s, what="each of steps", minimum=0) for s in self.steps)
        levels = tuple(check_sparsity(s, what="each of sparsities") for s in self.sparsities)
        if not steps or len(steps) != len(levels):
            raise ValueError(
                f"give one sparsity per step: {len(steps)} steps, {len(levels)} sparsities"
            )
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"steps must increase strictly, got {steps}")
        if any(b < a for a, b in pairwise(levels)):
            raise ValueError(
                f"sparsities must not decrease (a pruning schedule only prunes more), got {levels}"
            )
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "sparsities", levels)

    def sparsity_at(self, step: int) -> float:
        step = check_count(step, what="step", minimum=0)
        current = 0.0
        for at, level in zip(self.steps, self.sparsities, strict=True):
            if at <= step:
                current = level
        return current

    def update_steps(self, total: int) -> list[int]:
        return list(self.steps)

    @property
    def final(self) -> float:
        return self.sparsities[-1]

    def last_step(self) -> int:
        return self.steps[-1]

    def label(self) -> str:
        return f"iterative to {self.final:.0%} in {len(self.steps)} rounds"


@dataclass(frozen=True)
class Gradual(Schedule):
    """Sparsity rising from ``initial`` at ``start`` to ``final`` at ``end``.

    ``kind="cubic"`` is the schedule of Zhu & Gupta (2017), with ``n dt = end - start``::

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt)) ** 3

    which prunes fast early (while there are many redundant weights) and slowly near the end;
    ``kind="linear"`` rises in a straight line. Masks are updated every ``every`` steps from
    ``start`` (and at ``end``); in between, the sparsity of the last update holds. Before
    ``start`` the model is dense (sparsity 0); after ``end`` the sparsity is ``final``.

    >>> g = Gradual(0.0, 0.8, start=0, end=100, kind="cubic")
    >>> [round(g.sparsity_at(t), 3) for t in (0, 50, 100, 150)]
    [0.0, 0.7, 0.8, 0.8]
    """

    initial: float
    final_sparsity: float
    start: int
    end: int
    kind: str = "cubic"
    every: int = 1

    def __init__(
        self,
        initial: float,
        final: float,
        *,
        start: int,
        end: int,
        kind: str = "cubic",
        every: int = 1,
    ) -> None:
        object.__setattr__(
            self,
            "initial",
            check_sparsity(initial, what="initial sparsity"),
        )
        object.__setattr__(
            self,
            "final_sparsity",
            check_sparsity(final, what="final sparsity"),
        )
        object.__setattr__(self, "start", check_count(start, what="start", minimum=0))
        object.__setattr__(self, "end", check_count(end, what="end", minimum=0))
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "every", check_count(every, what="every"))
        if self.final_sparsity < self.initial:
            raise ValueError(
                f"final sparsity {self.final_sparsity} is below the initial sparsity "
                f"{self.initial}; a pruning schedule only prunes more"
            )
        if self.end <= self.start:
            raise ValueError(f"end (step {self.end}) must come after start (step {self.start})")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")

    @property
    def final(self) -> float:
        return self.final_sparsity

    def _formula(self, step: int) -> float:
        progress = (step - self.start) / (self.end - self.start)
        span = self.initial - self.final_sparsity
        if self.kind == "linear":
            return self.initial - span * progress
        return self.final_sparsity + span * (1.0 - progress) ** 3

    def sparsity_at(self, step: int) -> float:
        step = check_count(step, what="step", minimum=0)
        if step < self.start:
            return 0.0
        if step >= self.end:
            return self.final_sparsity
        last = self.start + (step - self.start) // self.every * self.every
        return self._formula(last)

    def update_steps(self, total: int) -> list[int]:
        return [*range(self.start, self.end, self.every), self.end]

    def last_step(self) -> int:
        return self.end

    def label(self) -> str:
        return f"gradual {self.kind} {self.initial:.0%} to {self.final:.0%}"


@dataclass(frozen=True)
class DynamicSparse(Schedule):
    """Dynamic sparse training at a constant sparsity: prune once, then drop and regrow.

    Every ``update_every`` steps, in each layer, the ``fraction`` of kept weights with the
    smallest magnitude are dropped and as many pruned positions are regrown: at random (SET,
    Mocanu et al., 2018) or where the dense gradient is largest (RigL, Evci et al., 2020).
    Regrown weights start at zero; a weight just dropped is not regrown in the same update.
    Each layer keeps its number of weights, so the sparsity never changes.

    Args:
        sparsity: Fraction of weights zeroed throughout.
        regrow: ``"random"`` or ``"gradient"``.
        update_every: Steps between mask updates.
        fraction: Share of each layer's kept weights replaced per update, in [0, 1].
        stop: Last step at which masks may change (default: never stop), so the last
            regrown weights get time to train.

    >>> d = DynamicSparse(0.9, regrow="gradient", update_every=10, fraction=0.2, stop=30)
    >>> d.sparsity_at(25), d.update_steps(100)
    (0.9, [0, 10, 20, 30])
    """

    sparsity: float
    regrow: str = "random"
    update_every: int = 50
    fraction: float = 0.3
    stop: int | None = None

    def __init__(
        self,
        sparsity: float,
        *,
        regrow: str = "random",
        update_every: int = 50,
        fraction: float = 0.3,
        stop: int | None = None,
    ) -> None:
        object.__setattr__(
            self,
            "sparsity",
            check_sparsity(sparsity, what="sparsity"),
        )
        if regrow not in REGROW:
            raise ValueError(f"unknown regrow {regrow!r}; accepted: {', '.join(REGROW)}")
        object.__setattr__(self, "regrow", regrow)
        object.__setattr__(self, "update_every", check_count(update_every, what="update_every"))
        object.__setattr__(
            self,
            "fraction",
            check_fraction(fraction, what="fraction"),
        )
        object.__setattr__(
            self, "stop", None if stop is None else check_count(stop, what="stop", minimum=0)
        )

    def sparsity_at(self, step: int) -> float:
        check_count(step, what="step", minimum=0)
        return self.sparsity

    def update_steps(self, total: int) -> list[int]:
        last = total - 1 if self.stop is None else min(self.stop, total - 1)
        return list(range(0, last + 1, self.update_every))

    @property
    def final(self) -> float:
        return self.sparsity

    def label(self) -> str:
        return f"dynamic sparse {self.sparsity:.0%} ({self.regrow} regrowth)"
