"""Selection: turn scores into kept/pruned decisions by sparsity or threshold.

Each layer's scores are sorted once (numpy's sort is many times faster than torch's on CPU,
and layers are sorted in parallel threads). After that, any sparsity or threshold is answered
by lookups in the sorted scores plus one comparison per layer, which is what makes a slider
move cheap. A global ranking over several layers needs no merged sort: the k-th smallest score
across sorted layers is found by a binary search over the float values themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# at home in runtime.checks now; still importable from here, their public path before
from ..runtime.checks import check_sparsity, check_threshold  # noqa: F401

__all__ = [
    "Ranking",
    "SortedScores",
    "WeightedRanking",
    "sort_scores",
]


class SortedScores:
    """The flat group scores of one layer and a sorted copy of them."""

    def __init__(self, name: str, scores: np.ndarray, sorted_scores: np.ndarray) -> None:
        self.name = name
        self.flat = scores
        self.sorted = sorted_scores

    @property
    def n(self) -> int:
        return int(self.flat.size)

    def _same_dtype(self, value: float, *, down: bool) -> np.floating:
        return _nearest(value, self.sorted.dtype, down=down)

    def count_le(self, value: float) -> int:
        """How many scores are <= value."""
        return int(np.searchsorted(self.sorted, self._same_dtype(value, down=True), "right"))

    def count_lt(self, value: float) -> int:
        """How many scores are < value."""
        return int(np.searchsorted(self.sorted, self._same_dtype(value, down=False), "left"))


def _nearest(value: float, dtype: np.dtype, *, down: bool) -> np.floating:
    """The nearest value of ``dtype`` at or below (``down``) or at or above ``value``.

    searchsorted with a wider scalar would copy the whole array to the wider type, so the
    value is cast instead; the comparison that decides the direction must be exact, in Python
    floats (numpy compares a float32 with a Python float in float32, where they look equal).
    """
    cast = np.dtype(dtype).type(value)
    if down and float(cast) > value:
        return np.nextafter(cast, cast.dtype.type(-np.inf))
    if not down and float(cast) < value:
        return np.nextafter(cast, cast.dtype.type(np.inf))
    return cast


def sort_scores(scores: dict[str, np.ndarray]) -> dict[str, SortedScores]:
    """Check and sort each layer's scores, several layers at once (numpy sorts without the GIL).

    Raises:
        ValueError: If a layer's scores contain NaN or inf (naming the layer).
    """
    dtype = np.result_type(np.float32, *(s.dtype for s in scores.values()))
    flats = {name: np.ascontiguousarray(s, dtype=dtype).reshape(-1) for name, s in scores.items()}
    workers = max(1, min(len(flats), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        sorted_ = dict(zip(flats, pool.map(np.sort, flats.values()), strict=True))
    for name, values in sorted_.items():
        # sorted: a NaN lands at the end, -inf at the start, +inf at the end
        if values.size and not (np.isfinite(values[0]) and np.isfinite(values[-1])):
            raise ValueError(
                f"importance scores of {name} contain NaN or inf; check its weights and data"
            )
    return {name: SortedScores(name, flats[name], sorted_[name]) for name in flats}


def _float_keys(dtype: np.dtype) -> tuple[type, int]:
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    return uint, 8 * np.dtype(dtype).itemsize


def _to_key(value: float, dtype: np.dtype) -> int:
    """Map a float to an unsigned integer with the same order (sign-magnitude -> offset)."""
    uint, bits = _float_keys(dtype)
    raw = int(np.array(value, dtype=dtype).view(uint))
    sign = 1 << (bits - 1)
    return raw ^ sign if raw < sign else ~raw & ((1 << bits) - 1)


def _from_key(key: int, dtype: np.dtype) -> float:
    uint, bits = _float_keys(dtype)
    sign = 1 << (bits - 1)
    raw = key ^ sign if key >= sign else ~key & ((1 << bits) - 1)
    return float(np.array(raw, dtype=uint).view(dtype))


class Ranking:
    """One ranking over the groups of one or more layers (equal-sized groups).

    Pruning order is by score, ties broken by position (earlier layer, lower index first),
    so the kept set for a larger sparsity is always contained in the one for a smaller.
    The number pruned for a sparsity is ``round(sparsity * n)``, the rule of
    ``torch.nn.utils.prune``.

    >>> layers = sort_scores({"a": np.array([0.3, 0.1, 0.2])})
    >>> r = Ranking(list(layers.values()), group_size=1)
    >>> r.keep(r.count_for_sparsity(2 / 3))["a"].tolist()
    [True, False, False]
    """

    def __init__(self, layers: Sequence[SortedScores], *, group_size: int) -> None:
        if not layers:
            raise ValueError("a ranking needs at least one layer")
        self._layers = list(layers)
        self._group_size = group_size
        self.n = sum(layer.n for layer in self._layers)
        self.total = self.n * group_size
        self._dtype = self._layers[0].sorted.dtype

    def count_for_sparsity(self, sparsity: float) -> int:
        """Number of groups to prune for ``sparsity``."""
        return round(sparsity * self.n)

    def count_for_threshold(self, threshold: float) -> int:
        """Number of groups whose score is at or below ``threshold`` (those are pruned)."""
        return sum(layer.count_le(threshold) for layer in self._layers)

    def sparsity_at(self, k: int) -> float:
        """Fraction of elements pruned when the ``k`` lowest groups are pruned."""
        return min(max(k, 0), self.n) / self.n if self.n else 0.0

    def kth(self, k: int) -> float:
        """The ``k``-th smallest score (1-based) across all layers."""
        if len(self._layers) == 1:
            return float(self._layers[0].sorted[k - 1])
        nonempty = [layer for layer in self._layers if layer.n]
        lo = _to_key(min(layer.sorted[0] for layer in nonempty), self._dtype)
        hi = _to_key(max(layer.sorted[-1] for layer in nonempty), self._dtype)
        while lo < hi:  # smallest value v with count(score <= v) >= k
            mid = (lo + hi) // 2
            if self.count_for_threshold(_from_key(mid, self._dtype)) >= k:
                hi = mid
            else:
                lo = mid + 1
        return _from_key(lo, self._dtype)

    def threshold_at(self, k: int) -> float:
        """A threshold that prunes exactly the ``k`` lowest groups (ties aside)."""
        if k <= 0 or self.n == 0:
            lowest = min((layer.sorted[0] for layer in self._layers if layer.n), default=0.0)
            return float(np.nextafter(self._dtype.type(lowest), -np.inf))
        return self.kth(min(k, self.n))

    def keep(self, k: int) -> dict[str, np.ndarray]:
        """Per layer, a flat bool array: True for groups kept when the ``k`` lowest are pruned."""
        k = max(0, min(int(k), self.n))
        if k == 0:
            return {layer.name: np.ones(layer.n, dtype=bool) for layer in self._layers}
        cut = self.kth(k)
        ties = k - sum(layer.count_lt(cut) for layer in self._layers)
        out = {}
        for layer in self._layers:
            keep = layer.flat > cut
            tied_here = layer.count_le(cut) - layer.count_lt(cut)
            if tied_here and ties < tied_here:
                # the cut falls inside a run of equal scores: prune only the first of them
                tied = np.flatnonzero(layer.flat == cut)
                keep[tied[max(ties, 0) :]] = True
            ties -= tied_here
            out[layer.name] = keep
        return out


class WeightedRanking:
    """A ranking over groups of different sizes (e.g. channels of several layers).

    Sparsity counts elements: the number of groups pruned is the one whose element count is
    closest to ``sparsity * total``.
    """

    def __init__(self, layers: Sequence[SortedScores], group_sizes: Sequence[int]) -> None:
        self._names = [layer.name for layer in layers]
        sizes = [layer.n for layer in layers]
        self._bounds = np.cumsum([0, *sizes])
        flat = np.concatenate([layer.flat for layer in layers])
        self._order = np.argsort(flat, kind="stable")
        self._sorted = flat[self._order]
        weights = np.repeat(np.asarray(group_sizes, dtype=np.int64), sizes)
        self._cum = np.cumsum(weights[self._order])
        self.n = int(flat.size)
        self.total = int(self._cum[-1]) if self.n else 0

    def count_for_sparsity(self, sparsity: float) -> int:
        goal = sparsity * self.total
        k = int(np.searchsorted(self._cum, goal, side="left"))
        below = float(self._cum[k - 1]) if k > 0 else 0.0
        above = float(self._cum[k]) if k < self.n else math.inf
        return k + 1 if above - goal < goal - below else k

    def count_for_threshold(self, threshold: float) -> int:
        at_or_below = _nearest(threshold, self._sorted.dtype, down=True)
        return int(np.searchsorted(self._sorted, at_or_below, side="right"))

    def sparsity_at(self, k: int) -> float:
        k = min(max(k, 0), self.n)
        return float(self._cum[k - 1]) / self.total if k and self.total else 0.0

    def threshold_at(self, k: int) -> float:
        if k <= 0 or self.n == 0:
            lowest = self._sorted[0] if self.n else 0.0
            return float(np.nextafter(self._sorted.dtype.type(lowest), -np.inf))
        return float(self._sorted[min(k, self.n) - 1])

    def keep(self, k: int) -> dict[str, np.ndarray]:
        flat = np.ones(self.n, dtype=bool)
        flat[self._order[: max(0, min(int(k), self.n))]] = False
        return {
            name: flat[a:b]
            for name, a, b in zip(self._names, self._bounds[:-1], self._bounds[1:], strict=True)
        }
