"""Selection within each output row: the comparison group of Wanda (Sun et al., 2024).

Wanda scores every weight by ``|w_ij| * ||x_j||_2`` and prunes the lowest fraction *within
each output row* ``i`` (each output unit loses the same share of its inputs), where a per-layer
ranking lets one row lose far more than another. For a convolution or a transposed layout the
"row" is everything that feeds one output channel (the target's ``out_dim`` indexes them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .selection import Selection
from .targets import Target

__all__ = ["RowRanked"]


class RowRanked(Selection):
    """Masks by lookup in scores sorted once per output row.

    Each row prunes its lowest ``sparsity * inputs`` scores. When that is not whole, the layer
    still loses exactly ``round(sparsity * size)``: every row loses the whole part, and the
    remainder goes one each to the rows whose next weight scores lowest. It selects by
    sparsity only.

    >>> sel = RowRanked({"w": torch.tensor([[1.0, 3, 2, 4], [9, 8, 7, 6]])},
    ...                 {"w": Target("w", "Linear", (2, 4), 8)})
    >>> sel.masks(sparsity=0.5, threshold=None, per_layer={})["w"].int().tolist()
    [[0, 1, 0, 1], [1, 1, 0, 0]]
    """

    def __init__(self, scores: Mapping[str, torch.Tensor], targets: Mapping[str, Target]) -> None:
        self._scores = dict(scores)
        self._targets = dict(targets)
        # per layer: scores as (rows, inputs), each row's ascending order (sorted once)
        self._rows = {fqn: self._as_rows(fqn, s) for fqn, s in self._scores.items()}
        self._order = {fqn: np.argsort(r, axis=1, kind="stable") for fqn, r in self._rows.items()}

    def _as_rows(self, fqn: str, scores: torch.Tensor) -> np.ndarray:
        out_dim = self._targets[fqn].out_dim
        moved = scores.detach().float().cpu().movedim(out_dim, 0)
        return moved.reshape(moved.shape[0], -1).numpy()

    def _full(self, fqn: str, keep: np.ndarray) -> torch.Tensor:
        target = self._targets[fqn]
        shape = list(target.shape)
        shape.insert(0, shape.pop(target.out_dim))
        moved = torch.from_numpy(keep).reshape(shape)
        return moved.movedim(0, target.out_dim).contiguous()

    def masks(self, *, sparsity, threshold, per_layer):
        if threshold is not None:
            raise ValueError("a per-row comparison selects by sparsity only, not a threshold")
        return {
            fqn: self._full(fqn, self._keep(fqn, per_layer.get(fqn, sparsity)))
            for fqn in self._rows
        }

    def _keep(self, fqn: str, sparsity: float) -> np.ndarray:
        rows, order = self._rows[fqn], self._order[fqn]
        total = round(sparsity * rows.size)  # as every strategy counts
        base, extra = divmod(total, rows.shape[0])
        counts = np.full(rows.shape[0], base)
        if extra:  # one more in the rows whose next weight scores lowest
            following = np.take_along_axis(rows, order[:, base : base + 1], axis=1)[:, 0]
            counts[np.argsort(following, kind="stable")[:extra]] += 1
        keep = np.ones(rows.shape, dtype=bool)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(rows.shape[1])[None, :], axis=1)
        keep[ranks < counts[:, None]] = False
        return keep

    def scores(self) -> dict[str, torch.Tensor]:
        return dict(self._scores)
