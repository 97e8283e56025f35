"""What a strategy is given (:class:`Layer`) and what it answers with (:class:`Selection`).

A :class:`prunelab.Pruner` hands a strategy one :class:`Layer` per target weight; the strategy
prepares a :class:`Selection` once, which then answers each request for masks by sparsity or
threshold. Scored strategies answer from scores sorted once (:mod:`.select` sorts and counts:
a slider move is a lookup), N:M strategies from masks made once, and strategies with their own
``layer_masks`` or ``model_masks`` method by calling it for each request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .granularity import NM, Granularity
from .select import Ranking, WeightedRanking, sort_scores
from .targets import Target

if TYPE_CHECKING:
    from .calibration import Calibration
    from .masks import Masks

__all__ = ["Layer", "Selection"]


@dataclass(frozen=True)
class Layer:
    """What a strategy sees of one target weight.

    Attributes:
        target: The target description (fqn, shape, ...).
        weight: The weight, detached; never modify it. float16 and bfloat16 weights come
            as float32 copies, so that scores are computed in float32.
        calibration: Data-driven statistics, or None when no data was given.
        seed: Seed for strategies that draw random numbers.
    """

    target: Target
    weight: torch.Tensor
    calibration: Calibration | None = None
    seed: int = 0

    @property
    def fqn(self) -> str:
        return self.target.fqn

    def _calibration(self, what: str) -> Calibration:
        if self.calibration is None:
            raise ValueError(
                f"{what} of {self.fqn!r} needs calibration data: pass "
                "calibration=prunelab.Calibration(model, data)"
            )
        return self.calibration

    def gradient(self) -> torch.Tensor:
        """Loss gradient w.r.t. the weight, summed over the calibration batches."""
        return self._calibration("the gradient").gradient(self.fqn)

    def input_norm(self) -> torch.Tensor:
        """L2 norm of each input feature/channel over the calibration data."""
        return self._calibration("the input activation norm").input_norm(self.fqn)

    def output_norm(self) -> torch.Tensor:
        """L2 norm of each output channel over the calibration data."""
        return self._calibration("the output activation norm").output_norm(self.fqn)


class Selection:
    """Prepared state of a strategy on one model: answers mask requests.

    Returned by :meth:`Strategy.prepare`; :class:`prunelab.Pruner` calls it. Sparsity,
    threshold and per-layer overrides arrive validated (per_layer holds every layer that
    is not covered by sparsity/threshold).
    """

    def masks(
        self,
        *,
        sparsity: float | None,
        threshold: float | None,
        per_layer: Mapping[str, float],
    ) -> dict[str, torch.Tensor]:
        """Full-shape bool masks, one per layer."""
        raise NotImplementedError

    def result(self, masks: Masks) -> Masks:
        """What :class:`prunelab.Pruner` returns for ``masks`` (the full set, from the last
        :meth:`masks` request): the masks themselves, or more (SparseGPT adds new weights)."""
        return masks

    def implied_thresholds(self, sparsity: float) -> dict[str, float]:
        """Per layer, the score threshold that ``sparsity`` amounts to (empty if unknown)."""
        return {}

    def scores(self) -> dict[str, torch.Tensor]:
        """Per layer, the group scores used for selection (empty if none)."""
        return {}

    def score_range(self) -> tuple[float, float] | None:
        """Smallest and largest score over all layers (None if the strategy has no scores)."""
        scores = [s for s in self.scores().values() if s.numel()]
        if not scores:
            return None
        return min(float(s.min()) for s in scores), max(float(s.max()) for s in scores)


def _checked_mask(mask: object, layer: Layer, who: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{who} must return a bool tensor for {layer.fqn!r}, got {mask!r}")
    if tuple(mask.shape) != layer.target.shape:
        raise ValueError(
            f"{who} returned shape {tuple(mask.shape)} for {layer.fqn!r}; "
            f"the weight's shape is {layer.target.shape}"
        )
    return mask.detach().cpu()


_Decide = Callable[[list[Layer], float], Mapping[str, torch.Tensor]]


class _PerCall(Selection):
    """Masks from a strategy's own method, called for each request and checked.

    Args:
        name: The strategy's registry name (for messages).
        who: Its class name (for messages about what its method returned).
        layers: The layers it prunes.
        decide: ``(layers, sparsity) -> {fqn: mask}``, the strategy's method.
    """

    def __init__(self, name: str, who: str, layers: Sequence[Layer], decide: _Decide) -> None:
        self._name = name
        self._who = who
        self._layers = {layer.fqn: layer for layer in layers}
        self._decide = decide

    def masks(self, *, sparsity, threshold, per_layer):
        if threshold is not None:
            raise ValueError(f"strategy {self._name!r} selects by sparsity only")
        out: dict[str, torch.Tensor] = {}
        for fqn, value in per_layer.items():
            out.update(self._decide([self._layers[fqn]], value))
        rest = [layer for fqn, layer in self._layers.items() if fqn not in per_layer]
        if rest:
            out.update(self._decide(rest, sparsity))
        return {
            fqn: _checked_mask(out.get(fqn), layer, self._who)
            for fqn, layer in self._layers.items()
        }


def _numpy(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().float().cpu().numpy()


class _Ranked(Selection):
    """Masks by lookup in scores sorted once, per layer or (``whole_model``) across layers."""

    def __init__(
        self,
        granularity: Granularity,
        scores: dict[str, torch.Tensor],
        targets: dict[str, Target],
        *,
        whole_model: bool,
    ) -> None:
        self._granularity = granularity
        self._global = whole_model
        self._scores = scores
        self._targets = targets
        # every layer sorted once; rankings over any set of layers are built from these
        self._sorted = sort_scores({fqn: _numpy(s) for fqn, s in scores.items()})
        self._units: dict[tuple[str, ...], Ranking | WeightedRanking] = {}

    def _unit(self, fqns: tuple[str, ...]) -> Ranking | WeightedRanking:
        if fqns not in self._units:
            sizes = [self._granularity.group_size(self._targets[f]) for f in fqns]
            layers = [self._sorted[f] for f in fqns]
            if len(set(sizes)) == 1:
                self._units[fqns] = Ranking(layers, group_size=sizes[0])
            else:
                self._units[fqns] = WeightedRanking(layers, sizes)
        return self._units[fqns]

    def _groups(self, rest: list[str]) -> list[tuple[str, ...]]:
        if self._global and rest:
            return [tuple(rest)]
        return [(fqn,) for fqn in rest]

    def masks(self, *, sparsity, threshold, per_layer):
        keep: dict[str, np.ndarray] = {}
        for fqn, value in per_layer.items():
            unit = self._unit((fqn,))
            keep.update(unit.keep(unit.count_for_sparsity(value)))
        rest = [fqn for fqn in self._scores if fqn not in per_layer]
        for fqns in self._groups(rest):
            unit = self._unit(fqns)
            if threshold is not None:
                k = unit.count_for_threshold(threshold)
            else:
                k = unit.count_for_sparsity(sparsity)
            keep.update(unit.keep(k))
        return {fqn: self._full_mask(fqn, keep[fqn]) for fqn in self._scores}

    def _full_mask(self, fqn: str, keep: np.ndarray) -> torch.Tensor:
        target = self._targets[fqn]
        group_mask = torch.from_numpy(np.ascontiguousarray(keep))
        return self._granularity.expand(group_mask, target).contiguous()

    def score_range(self) -> tuple[float, float] | None:
        layers = [layer for layer in self._sorted.values() if layer.n]
        if not layers:
            return None
        low = min(float(layer.sorted[0]) for layer in layers)
        return low, max(float(layer.sorted[-1]) for layer in layers)

    def implied_thresholds(self, sparsity: float) -> dict[str, float]:
        out = {}
        for fqns in self._groups(list(self._scores)):
            unit = self._unit(fqns)
            value = unit.threshold_at(unit.count_for_sparsity(sparsity))
            out.update(dict.fromkeys(fqns, value))
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        return dict(self._scores)


class _NMSelection(Selection):
    """N:M masks: the pattern fixes them, so they are made once."""

    def __init__(self, pattern: NM, scores: dict[str, torch.Tensor], targets: dict[str, Target]):
        self._pattern = pattern
        self._scores = scores
        self._masks = {fqn: pattern.keep(s, targets[fqn]).cpu() for fqn, s in scores.items()}

    def masks(self, *, sparsity, threshold, per_layer):
        if threshold is not None:
            raise ValueError(
                f"{self._pattern} sparsity keeps {self._pattern.n} of every {self._pattern.m} "
                "weights; it is not chosen by a threshold"
            )
        allowed = (0.0, self._pattern.sparsity)
        out = {}
        for fqn, mask in self._masks.items():
            value = per_layer.get(fqn, sparsity)
            if value is None or np.isclose(value, self._pattern.sparsity):
                out[fqn] = mask
            elif value == 0.0:
                out[fqn] = torch.ones_like(mask)
            else:
                raise ValueError(
                    f"{self._pattern} pattern gives sparsity {self._pattern.sparsity:g}; "
                    f"per-layer sparsity for {fqn!r} must be one of {allowed}, got {value}"
                )
        return out

    def scores(self) -> dict[str, torch.Tensor]:
        return dict(self._scores)
