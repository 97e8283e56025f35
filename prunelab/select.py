"""Selection: turn scores into kept/pruned decisions by sparsity or threshold.

Scores are sorted once (numpy's sort is several times faster than torch's on CPU); after that
any sparsity or threshold is answered by a lookup in the sorted scores plus one comparison,
which is what makes a slider move cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Ranking", "check_sparsity", "check_threshold"]


def check_sparsity(value: object, *, what: str = "sparsity") -> float:
    """Validate a sparsity (fraction of weights zeroed) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{what} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (fraction of weights zeroed), got {value}")
    return value


def check_threshold(value: object) -> float:
    """Validate an absolute score threshold and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"threshold must be a finite number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {value}")
    return value


class Ranking:
    """Group scores of one or more layers, sorted once, for repeated selection.

    A group is what is kept or pruned as a whole (an element, a channel); ``sizes`` gives the
    number of weight elements per group of each layer, so sparsity always counts elements.
    Pruning order is by score, ties broken by position (earlier layer, lower index first),
    so the kept set for a larger sparsity is always contained in the one for a smaller.

    >>> r = Ranking([np.array([0.3, 0.1, 0.2])], [1])
    >>> r.keep(r.count_for_sparsity(2 / 3))[0].tolist()
    [True, False, False]
    """

    def __init__(self, scores: Sequence[np.ndarray], sizes: Sequence[int]) -> None:
        if len(scores) != len(sizes) or not scores:
            raise ValueError("Ranking needs one size per score array, and at least one array")
        flats = [np.ascontiguousarray(s).reshape(-1) for s in scores]
        self._flat = np.concatenate(flats) if len(flats) > 1 else flats[0]
        if not np.isfinite(self._flat).all():
            raise ValueError("importance scores contain NaN or inf; check weights and data")
        self._bounds = np.cumsum([0] + [f.size for f in flats])
        self.n = int(self._flat.size)
        if len(set(sizes)) == 1:
            self._order = None
            self._sorted = np.sort(self._flat)
            self._cum = None
            self.total = self.n * int(sizes[0])
        else:
            # groups of different sizes: the element count of the k smallest needs their order
            self._order = np.argsort(self._flat, kind="stable")
            self._sorted = self._flat[self._order]
            weights = np.repeat(np.asarray(sizes, dtype=np.int64), [f.size for f in flats])
            self._cum = np.cumsum(weights[self._order])
            self.total = int(self._cum[-1]) if self.n else 0

    @property
    def sorted_scores(self) -> np.ndarray:
        """All group scores in ascending order (read-only view)."""
        view = self._sorted.view()
        view.flags.writeable = False
        return view

    def count_for_sparsity(self, sparsity: float) -> int:
        """Number of groups to prune so that the pruned elements are closest to ``sparsity``.

        With equal-sized groups this is ``round(sparsity * n)``, the rule of
        ``torch.nn.utils.prune``.
        """
        if self._cum is None:
            return round(sparsity * self.n)
        goal = sparsity * self.total
        k = int(np.searchsorted(self._cum, goal, side="left"))
        below = float(self._cum[k - 1]) if k > 0 else 0.0
        above = float(self._cum[k]) if k < self.n else math.inf
        return k + 1 if above - goal < goal - below else k

    def count_for_threshold(self, threshold: float) -> int:
        """Number of groups whose score is at or below ``threshold`` (those are pruned)."""
        return int(np.searchsorted(self._sorted, threshold, side="right"))

    def threshold_at(self, k: int) -> float:
        """A threshold that prunes exactly the ``k`` lowest groups (ties aside)."""
        if k <= 0:
            return float(np.nextafter(self._sorted[0], -np.inf)) if self.n else 0.0
        return float(self._sorted[min(k, self.n) - 1])

    def sparsity_at(self, k: int) -> float:
        """Fraction of elements pruned when the ``k`` lowest groups are pruned."""
        if self.total == 0 or k <= 0:
            return 0.0
        k = min(k, self.n)
        pruned = self._cum[k - 1] if self._cum is not None else k * (self.total // self.n)
        return float(pruned) / self.total

    def keep(self, k: int) -> list[np.ndarray]:
        """Per layer, a flat bool array: True for groups kept when the ``k`` lowest are pruned."""
        k = max(0, min(int(k), self.n))
        if self._order is not None:
            flat = np.ones(self.n, dtype=bool)
            flat[self._order[:k]] = False
        elif k == 0:
            flat = np.ones(self.n, dtype=bool)
        else:
            cut = self._sorted[k - 1]
            flat = self._flat > cut
            below = int(np.searchsorted(self._sorted, cut, side="left"))
            if k < self.n and self._sorted[k] == cut:
                # the cut falls inside a run of equal scores: prune only the first of them
                tied = np.flatnonzero(self._flat == cut)
                flat[tied[k - below :]] = True
        return [flat[a:b] for a, b in zip(self._bounds[:-1], self._bounds[1:], strict=True)]
