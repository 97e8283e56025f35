"""Granularities: which elements of a weight are kept or pruned together.

A granularity maps element-wise scores of a weight to *group* scores (one per group that is
kept or pruned as a whole) and maps a group mask back to the full weight shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .targets import Target

__all__ = [
    "CHANNEL",
    "HEAD",
    "INPUT_CHANNEL",
    "NM",
    "UNSTRUCTURED",
    "Channel",
    "Granularity",
    "Head",
    "InputChannel",
    "Unstructured",
    "parse_granularity",
]


class Granularity:
    """Base class: element-wise grouping (unstructured)."""

    name = "unstructured"

    def check(self, target: Target) -> None:
        """Raise ``ValueError`` if this granularity cannot be used on ``target``."""

    def reduce(self, scores: torch.Tensor, target: Target) -> torch.Tensor:
        """Sum element-wise ``scores`` over each group."""
        return scores

    def expand(self, group_mask: torch.Tensor, target: Target) -> torch.Tensor:
        """Broadcast a mask over groups to the full weight shape."""
        return group_mask.reshape(target.shape)

    def group_size(self, target: Target) -> int:
        """Number of weight elements in one group."""
        return 1

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Granularity) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Unstructured(Granularity):
    """Every weight element is its own group."""


class _AlongDim(Granularity):
    """Whole slices along one dimension of the weight (output or input channels)."""

    def _dim(self, target: Target) -> int:
        raise NotImplementedError

    def reduce(self, scores: torch.Tensor, target: Target) -> torch.Tensor:
        dim = self._dim(target)
        other = [d for d in range(scores.ndim) if d != dim]
        return scores.sum(dim=other) if other else scores

    def expand(self, group_mask: torch.Tensor, target: Target) -> torch.Tensor:
        dim = self._dim(target)
        view = [1] * len(target.shape)
        view[dim] = target.shape[dim]
        return group_mask.reshape(view).expand(target.shape)

    def group_size(self, target: Target) -> int:
        return target.numel // target.shape[self._dim(target)]


class Channel(_AlongDim):
    """Output channels (rows of a Linear weight, filters of a conv).

    A grouped convolution (not depthwise) is pruned by *position*: its output channel
    ``g * P + p`` is position ``p`` of group ``g``, a position's score is the sum of its
    channels' scores over the groups, and a position is kept or pruned in every group at
    once. Only then can ``shrink`` remove what the mask prunes (the groups stay equal), as
    Torch-Pruning prunes such a layer. A layer whose outputs a grouped convolution reads
    (``Target.out_groups``, set by :class:`~prunelab.core.pruner.Pruner`) is pruned by
    position for the same reason.
    """

    name = "channel"

    def _dim(self, target: Target) -> int:
        return target.out_dim

    @staticmethod
    def positions(target: Target) -> int | None:
        """Positions per group of a grouped (not depthwise) convolution, or of a layer that a
        grouped convolution reads (``out_groups``); None for every other layer.

        A transposed convolution's weight already holds one group's output channels
        (its dimension 1), so a mask over them prunes positions as it is.
        """
        shape = target.shape
        if target.out_dim != 0:
            return None
        own = target.groups > 1 and not (shape[1] == 1 and shape[0] == target.groups)
        groups = math.lcm(target.groups if own else 1, target.out_groups)
        if groups <= 1 or shape[0] % groups:
            return None
        return shape[0] // groups

    def pool(self, channel_scores: torch.Tensor, target: Target) -> torch.Tensor:
        """One score per output channel -> one per group (per position when grouped)."""
        positions = self.positions(target)
        if positions is None:
            return channel_scores
        return channel_scores.reshape(-1, positions).sum(dim=0)

    def per_channel(self, group_scores: torch.Tensor, target: Target) -> torch.Tensor:
        """Group scores -> one per output channel (a position's score in every group)."""
        positions = self.positions(target)
        if positions is None:
            return group_scores
        return group_scores.repeat(target.shape[0] // positions)

    def reduce(self, scores: torch.Tensor, target: Target) -> torch.Tensor:
        return self.pool(super().reduce(scores, target), target)

    def expand(self, group_mask: torch.Tensor, target: Target) -> torch.Tensor:
        positions = self.positions(target)
        if positions is not None:
            group_mask = group_mask.repeat(target.shape[0] // positions)
        return super().expand(group_mask, target)

    def group_size(self, target: Target) -> int:
        positions = self.positions(target)
        return target.numel // positions if positions else super().group_size(target)


class InputChannel(_AlongDim):
    """Input channels/features (columns of a Linear weight)."""

    name = "input-channel"

    def _dim(self, target: Target) -> int:
        return target.in_dim


@dataclass(frozen=True, eq=False)
class NM(Granularity):
    """N:M semi-structured sparsity: keep ``n`` of every ``m`` consecutive input weights.

    Groups run along the input dimension, one row (output channel, kernel position) at a time,
    as sparse tensor cores expect.
    """

    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)) or not 0 < self.n < self.m:
            raise ValueError(f"N:M needs whole numbers with 0 < N < M, got {self.n}:{self.m}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        """The fixed fraction zeroed by this pattern, ``1 - n/m``."""
        return 1 - self.n / self.m

    def check(self, target: Target) -> None:
        size = target.shape[target.in_dim]
        if size % self.m:
            raise ValueError(
                f"{self.name} sparsity groups {self.m} consecutive input weights, but "
                f"{target.fqn} has {size} inputs (not divisible by {self.m}); "
                "exclude it or choose an M that divides it"
            )

    def _rows(self, tensor: torch.Tensor, target: Target) -> torch.Tensor:
        moved = tensor.movedim(target.in_dim, -1)
        return moved.reshape(-1, self.m)

    def keep(self, scores: torch.Tensor, target: Target) -> torch.Tensor:
        """Full-shape mask keeping the ``n`` highest scores in each group of ``m``."""
        self.check(target)
        rows = self._rows(scores, target)
        # stable ranking inside each group: ties keep the earlier weight
        order = torch.argsort(rows, dim=1, descending=True, stable=True)
        keep = torch.zeros_like(rows, dtype=torch.bool)
        keep.scatter_(1, order[:, : self.n], True)
        moved_shape = list(scores.movedim(target.in_dim, -1).shape)
        return keep.reshape(moved_shape).movedim(-1, target.in_dim).contiguous()

    def group_size(self, target: Target) -> int:
        return self.m


class Head(Granularity):
    """Whole attention heads: a head's q, k, v rows and output-projection columns together.

    A head spans several tensors, so it is not a grouping of one weight: only the
    ``head-magnitude`` strategy (:mod:`prunelab.core.heads`) selects by it.
    """

    name = "head"

    def check(self, target: Target) -> None:
        raise ValueError(
            "granularity 'head' spans several tensors (q, k, v and the output projection); "
            "use the strategy 'head-magnitude' to prune attention heads"
        )


UNSTRUCTURED = Unstructured()
HEAD = Head()
CHANNEL = Channel()
INPUT_CHANNEL = InputChannel()

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_granularity(spec: str | Granularity) -> Granularity:
    """Turn ``"unstructured"``, ``"channel"``, ``"input-channel"``, ``"head"`` or ``"N:M"`` into a
    Granularity.

    >>> parse_granularity("2:4").sparsity
    0.5
    """
    if isinstance(spec, Granularity):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"granularity must be a string or Granularity, got {spec!r}")
    named = {g.name: g for g in (UNSTRUCTURED, CHANNEL, INPUT_CHANNEL, HEAD)}
    if spec in named:
        return named[spec]
    if match := _NM.match(spec):
        return NM(int(match.group(1)), int(match.group(2)))
    raise ValueError(
        f"unknown granularity {spec!r}; accepted: unstructured, channel, input-channel, "
        "head (with the head-magnitude strategy), or N:M such as 2:4"
    )
