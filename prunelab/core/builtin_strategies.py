"""The built-in strategies: criteria (scope and granularity are options) and the classic names
as presets of them. Importing :mod:`.strategies` registers them, in this order (the app's menus
follow it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from . import criteria
from .calibration import activations_visible
from .granularity import NM, Channel, Granularity, InputChannel, parse_granularity
from .options import HIDDEN, NM_PATTERNS, Option
from .rows import RowRanked
from .selection import Layer, Selection
from .strategies import ScoredStrategy, _preset, register_strategy
from .targets import Target

COMPARISONS = ("layer", "row")

__all__ = [
    "ActivationMagnitude",
    "ActivationNormChannel",
    "Magnitude",
    "MagnitudeGradient",
    "NMStrategy",
    "RandomStrategy",
    "WeightNormChannel",
]


# ----------------------------------------------------------------------------------------
# Built-ins: criteria (scope and granularity are options) and the classic names as presets


@register_strategy("random")
@dataclass(frozen=True)
class RandomStrategy(ScoredStrategy):
    """Prune at random (seeded), the same fraction in every layer: the baseline to beat."""

    by_threshold: ClassVar[bool] = False
    seeded: ClassVar[bool] = True

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.random_scores(layer.target.shape, seed=layer.seed, fqn=layer.fqn)


@register_strategy("magnitude")
@dataclass(frozen=True)
class Magnitude(ScoredStrategy):
    """Prune the smallest |w|, within each layer or across the model (scope)."""

    magnitude_scores: ClassVar[bool] = True

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.magnitude(layer.weight)


@register_strategy("magnitude-gradient")
@dataclass(frozen=True)
class MagnitudeGradient(ScoredStrategy):
    """Prune the smallest |w x grad| (first-order Taylor), within each layer or across it."""

    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.taylor(layer.weight, layer.gradient())


def _hidden(target: Target, what: str) -> str:
    return (
        f"the {what} of {target.fqn} are internal to its {target.module_type} module, where "
        "activation statistics cannot see them; prune it with a weight-only strategy"
    )


@register_strategy("activation-magnitude")
@dataclass(frozen=True)
class ActivationMagnitude(ScoredStrategy):
    """Prune the smallest |w| x ||input|| (Wanda), within each layer, each row, or across it.

    Args:
        comparison: Which weights a score competes with, for unstructured pruning in each
            layer: ``"layer"`` (one ranking per layer, so rows lose different shares) or
            ``"row"`` (the Wanda paper's: each output row loses the same share; preset
            ``wanda``). N:M groups lie within a row, so both mean the same there.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"activations"})
    comparison: str = field(
        default="layer",
        kw_only=True,
        metadata={
            "option": Option(
                "Compare within",
                choices=COMPARISONS,
                help="layer: one ranking per layer. row: each output row loses the same "
                "fraction of its inputs (the Wanda paper).",
            )
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison must be one of {COMPARISONS}, got {self.comparison!r}")
        if self.comparison == "row" and (
            self.scope != "layer" or isinstance(self.granularity, (Channel, InputChannel))
        ):
            raise ValueError(
                "comparison='row' ranks weights within each output row of a layer: it needs "
                f"scope='layer' and unstructured or N:M granularity, got scope={self.scope!r}, "
                f"granularity={self.granularity}"
            )

    @property
    def by_threshold(self) -> bool:  # type: ignore[override]
        # one cut-off for a whole layer is the per-layer comparison, not the per-row one
        return self.comparison != "row"

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        if self.comparison == "row" and not isinstance(self.granularity, NM):
            scores = {layer.fqn: self.group_scores(layer) for layer in layers}
            return RowRanked(scores, {layer.fqn: layer.target for layer in layers})
        return super().prepare(layers)

    def unsupported(self, target: Target) -> str | None:
        if not activations_visible(target):
            return _hidden(target, "inputs")
        return super().unsupported(target)

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.activation_magnitude(layer.weight, layer.input_norm(), layer.target)


_preset(
    "global-magnitude",
    Magnitude,
    "Prune the smallest |w| across the whole model (one ranking for all layers).",
    scope="global",
)
_preset(
    "layer-magnitude",
    Magnitude,
    "Prune the smallest |w| within each layer, the same fraction everywhere.",
    scope="layer",
)
_preset(
    "global-magnitude-gradient",
    MagnitudeGradient,
    "Prune the smallest |w x grad| (first-order Taylor) across the whole model.",
    scope="global",
)
_preset(
    "layer-magnitude-gradient",
    MagnitudeGradient,
    "Prune the smallest |w x grad| (first-order Taylor) within each layer.",
    scope="layer",
)
_preset(
    "global-activation-magnitude",
    ActivationMagnitude,
    "Prune the smallest |w| x ||input|| (Wanda-style) across the whole model.",
    scope="global",
)
_preset(
    "layer-activation-magnitude",
    ActivationMagnitude,
    "Prune the smallest |w| x ||input|| (Wanda-style) within each layer (one ranking).",
    scope="layer",
    comparison="layer",
)


def _channel_dim(granularity: Granularity, target: Target) -> int | None:
    if isinstance(granularity, Channel):
        return target.out_dim
    if isinstance(granularity, InputChannel):
        return target.in_dim
    return None


@register_strategy("weight-norm-channel")
@dataclass(frozen=True)
class WeightNormChannel(ScoredStrategy):
    """Remove whole output channels with the smallest Ln weight norm, in each layer.

    Args:
        p: Norm order (1 or 2 are usual; ``torch.nn.utils.prune.ln_structured``'s ``n``).
    """

    granularity: Granularity | str = "channel"
    p: float = field(default=1, metadata={"option": Option("Norm", choices=(1, 2), format="L{}")})

    def __post_init__(self) -> None:
        super().__post_init__()
        number = isinstance(self.p, (int, float)) and not isinstance(self.p, bool)
        if not number or not self.p > 0:  # inf is the max norm, as in torch
            raise ValueError(f"p (the norm's order) must be a positive number, got {self.p!r}")

    def scores(self, layer: Layer) -> torch.Tensor:
        dim = _channel_dim(self.granularity, layer.target)
        if dim is None:
            return criteria.magnitude(layer.weight)
        return criteria.channel_norm(layer.weight, p=self.p, dim=dim)


@register_strategy("activation-norm-channel")
@dataclass(frozen=True)
class ActivationNormChannel(ScoredStrategy):
    """Remove whole output channels whose activations have the smallest L2 norm, in each layer."""

    needs: ClassVar[frozenset[str]] = frozenset({"activations"})
    granularity: Granularity | str = "channel"

    def unsupported(self, target: Target) -> str | None:
        if isinstance(self.granularity, InputChannel):
            if not activations_visible(target):
                return _hidden(target, "inputs")
            if target.groups != 1:
                return f"{target.fqn} is a grouped convolution: its input channels are shared"
        elif not activations_visible(target, output=True):
            return _hidden(target, "outputs")
        return super().unsupported(target)

    def scores(self, layer: Layer) -> torch.Tensor:
        if isinstance(self.granularity, Channel):
            return layer.output_norm()
        if isinstance(self.granularity, InputChannel) and layer.target.groups == 1:
            return layer.input_norm()
        raise ValueError(
            "activation-norm-channel scores whole channels: use granularity 'channel' "
            f"(or 'input-channel' on ungrouped layers), got {self.granularity}"
        )


_preset(
    "threshold",
    Magnitude,
    "Prune every weight with |w| at or below an absolute threshold.",
    scope="global",
)


@register_strategy("n:m")
@dataclass(frozen=True)
class NMStrategy(Magnitude):
    """Keep the n largest |w| in every group of m consecutive weights (2:4 by default).

    Args:
        n: Weights kept per group.
        m: Group size.
    """

    by_threshold: ClassVar[bool] = False
    n: int = field(default=2, metadata=HIDDEN)  # chosen through the pattern (granularity)
    m: int = field(default=4, metadata=HIDDEN)
    granularity: Granularity | str = field(
        default="", repr=False, metadata={"option": Option("N:M pattern", choices=NM_PATTERNS)}
    )
    # each group of m keeps n: the same in a layer or across layers
    scope: str = field(default="layer", kw_only=True, metadata=HIDDEN)

    def __post_init__(self) -> None:
        pattern = self.granularity or f"{self.n}:{self.m}"
        object.__setattr__(self, "granularity", parse_granularity(pattern))
        if not isinstance(self.granularity, NM):
            raise ValueError(f"n:m needs an N:M granularity, got {self.granularity}")
        object.__setattr__(self, "n", self.granularity.n)
        object.__setattr__(self, "m", self.granularity.m)
        super().__post_init__()


# the language-model methods come after the classic names (menus keep their order)
_preset(
    "wanda",
    ActivationMagnitude,
    "Wanda as published: prune the smallest |w| x ||input|| within each output row.",
    scope="layer",
    comparison="row",
)

# SparseGPT rewrites weights, so it lives with its solver; attention heads (core/heads.py)
# build on the classes above. Importing them registers "head-magnitude" (and, through heads,
# "head-taylor") and "sparsegpt" last.
from . import heads as _heads  # noqa: E402, F401
from . import sparsegpt_strategy  # noqa: E402, F401
