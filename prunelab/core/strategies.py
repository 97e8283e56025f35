"""Pruning strategies: a criterion, a scope and a granularity, kept in a registry.

Three base classes, each with one method to override:

* :class:`ScoredStrategy` -- override ``scores(layer)``; prunelab sorts the scores once and
  selects by sparsity or threshold, layerwise or globally. All built-ins are of this kind.
* :class:`LayerwiseStrategy` -- override ``layer_masks(layer, sparsity)`` for full control of
  one layer at a time.
* :class:`GlobalStrategy` -- override ``model_masks(layers, sparsity)`` to decide for all
  layers together.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import torch

from . import criteria
from .calibration import activations_visible
from .granularity import NM, UNSTRUCTURED, Channel, Granularity, InputChannel, parse_granularity
from .select import Ranking, WeightedRanking, sort_scores
from .targets import Target

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = [
    "GlobalStrategy",
    "Layer",
    "LayerwiseStrategy",
    "ScoredStrategy",
    "Selection",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "strategy_table",
    "supported_targets",
]


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


class Strategy:
    """Base of all strategies. Subclass one of the three kinds below, not this one.

    Class attributes:
        name: Registry name (set by :func:`register_strategy`).
        description: One line for menus (default: first line of the docstring).
        needs: Calibration statistics required: ``"gradients"`` and/or ``"activations"``.
        by_threshold: Whether masks can be asked for by absolute threshold.
        prune_outputs: With output-channel granularity, also prune the layers whose outputs
            are the model's outputs (False: they are left out, as the classes would go).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    by_threshold: ClassVar[bool] = False
    scope: ClassVar[str] = "layer"
    granularity: Granularity = UNSTRUCTURED
    prune_outputs: bool = False

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        """Do the per-model work (scores, sorting) once and return a :class:`Selection`."""
        raise NotImplementedError

    @property
    def fixed_sparsity(self) -> float | None:
        """The only sparsity this strategy produces, if its pattern fixes it (N:M)."""
        return self.granularity.sparsity if isinstance(self.granularity, NM) else None

    def unsupported(self, target: Target) -> str | None:
        """Why this strategy cannot prune ``target``, or None when it can.

        By default, a target is supported when the granularity fits its shape (N:M needs
        a number of inputs divisible by M). Strategies that need more (activations that
        hooks can see) say so here. Left unchosen, the targets a strategy prunes are the
        ones it supports (:func:`supported_targets`).
        """
        try:
            parse_granularity(self.granularity).check(target)
        except ValueError as exc:
            return str(exc)
        return None


def supported_targets(strategy: Strategy, found: Sequence[Target]) -> list[Target]:
    """The targets of ``found`` that ``strategy`` can prune: the default choice of layers.

    Raises:
        ValueError: If it can prune none of them, with the reason for the first.

    >>> from prunelab.core.targets import targets
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 2))
    >>> [t.fqn for t in supported_targets(get_strategy("n:m"), targets(net))]
    ['0.weight']
    """
    kept = [t for t in found if strategy.unsupported(t) is None]
    if found and not kept:
        raise ValueError(
            f"strategy {strategy.name!r} can prune none of the {len(found)} layer(s): "
            f"{strategy.unsupported(found[0])}"
        )
    return kept


# ----------------------------------------------------------------------------------------
# Custom strategies: full control, one method


def _checked_mask(mask: object, layer: Layer, who: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{who} must return a bool tensor for {layer.fqn!r}, got {mask!r}")
    if tuple(mask.shape) != layer.target.shape:
        raise ValueError(
            f"{who} returned shape {tuple(mask.shape)} for {layer.fqn!r}; "
            f"the weight's shape is {layer.target.shape}"
        )
    return mask.detach().cpu()


class LayerwiseStrategy(Strategy):
    """A strategy deciding one layer at a time. Override :meth:`layer_masks`.

    >>> class KeepFirst(LayerwiseStrategy):
    ...     '''Keep the first elements of each layer.'''
    ...     def layer_masks(self, layer, sparsity):
    ...         keep = torch.ones(layer.weight.numel(), dtype=torch.bool)
    ...         keep[len(keep) - round(sparsity * len(keep)):] = False
    ...         return keep.reshape(layer.weight.shape)
    """

    def layer_masks(self, layer: Layer, sparsity: float) -> torch.Tensor:
        """Bool mask (True = kept) of ``layer.weight``'s shape at ``sparsity``."""
        raise NotImplementedError

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        return _PerCall(self, layers)


class GlobalStrategy(Strategy):
    """A strategy deciding for all layers together. Override :meth:`model_masks`."""

    scope: ClassVar[str] = "global"

    def model_masks(self, layers: Sequence[Layer], sparsity: float) -> dict[str, torch.Tensor]:
        """Masks for every layer such that the overall sparsity is ``sparsity``."""
        raise NotImplementedError

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        return _PerCall(self, layers)


class _PerCall(Selection):
    def __init__(self, strategy: LayerwiseStrategy | GlobalStrategy, layers: Sequence[Layer]):
        self._strategy = strategy
        self._layers = {layer.fqn: layer for layer in layers}

    def masks(self, *, sparsity, threshold, per_layer):
        who = f"{type(self._strategy).__name__}"
        if threshold is not None:
            raise ValueError(f"strategy {self._strategy.name!r} selects by sparsity only")
        out = {}
        for fqn, value in per_layer.items():
            out.update(self._call([self._layers[fqn]], value))
        rest = [layer for fqn, layer in self._layers.items() if fqn not in per_layer]
        if rest:
            out.update(self._call(rest, sparsity))
        return {fqn: _checked_mask(out.get(fqn), self._layers[fqn], who) for fqn in self._layers}

    def _call(self, layers: list[Layer], sparsity: float) -> dict[str, torch.Tensor]:
        if isinstance(self._strategy, GlobalStrategy):
            result = self._strategy.model_masks(layers, sparsity)
            if not isinstance(result, Mapping):
                raise TypeError("model_masks must return a dict {fqn: bool tensor}")
            return dict(result)
        return {layer.fqn: self._strategy.layer_masks(layer, sparsity) for layer in layers}


# ----------------------------------------------------------------------------------------
# Score-based strategies: sorted once, selected by lookup


@dataclass(frozen=True)
class ScoredStrategy(Strategy):
    """A strategy defined by importance scores. Override :meth:`scores`.

    Scores are computed and sorted once per model; masks for any sparsity or threshold
    then cost a lookup and a comparison. ``scope`` (class attribute) is ``"layer"`` (each
    layer pruned to the sparsity) or ``"global"`` (one ranking across all layers).

    Args:
        granularity: ``"unstructured"``, ``"channel"``, ``"input-channel"`` or ``"N:M"``.
        prune_outputs: With ``"channel"`` granularity, prune the model's output layers too
            (keyword only; by default they are left out, see :class:`prunelab.Pruner`).
    """

    by_threshold: ClassVar[bool] = True
    granularity: Granularity | str = UNSTRUCTURED
    prune_outputs: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", parse_granularity(self.granularity))
        if not isinstance(self.prune_outputs, bool):
            raise ValueError(f"prune_outputs must be True or False, got {self.prune_outputs!r}")

    def scores(self, layer: Layer) -> torch.Tensor:
        """Importance of the weights of ``layer`` (higher = kept longer).

        Either element-wise (the weight's shape; summed per group for channel
        granularities) or one score per group (per channel).
        """
        raise NotImplementedError

    def group_scores(self, layer: Layer) -> torch.Tensor:
        """Scores per group of the strategy's granularity, flattened to the group layout."""
        granularity = self.granularity
        granularity.check(layer.target)
        scores = self.scores(layer)
        if not isinstance(scores, torch.Tensor):
            raise TypeError(f"{type(self).__name__}.scores must return a tensor")
        if tuple(scores.shape) == layer.target.shape:
            if isinstance(granularity, NM):
                return scores.detach()
            return granularity.reduce(scores.detach(), layer.target)
        groups = layer.target.numel // granularity.group_size(layer.target)
        if scores.ndim == 1 and scores.shape[0] == groups and not isinstance(granularity, NM):
            return scores.detach()
        raise ValueError(
            f"{type(self).__name__}.scores returned shape {tuple(scores.shape)} for "
            f"{layer.fqn!r}: expected the weight's shape {layer.target.shape} or one score "
            f"per {granularity} group ({groups})"
        )

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        scores = {layer.fqn: self.group_scores(layer) for layer in layers}
        targets = {layer.fqn: layer.target for layer in layers}
        if isinstance(self.granularity, NM):
            return _NMSelection(self.granularity, scores, targets)
        return _Ranked(self, scores, targets)


def _numpy(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().float().cpu().numpy()


class _Ranked(Selection):
    def __init__(
        self,
        strategy: ScoredStrategy,
        scores: dict[str, torch.Tensor],
        targets: dict[str, Target],
    ) -> None:
        self._granularity = strategy.granularity
        self._global = strategy.scope == "global"
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


# ----------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(
    name: str, *, replace: bool = False
) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator adding a strategy to the registry (and so to the app's menus).

    Args:
        name: Registry name, e.g. ``"my-strategy"``.
        replace: Allow replacing an existing entry of that name.

    >>> @register_strategy("doc-example-magnitude", replace=True)
    ... @dataclass(frozen=True)
    ... class DocMagnitude(ScoredStrategy):
    ...     '''Prune the smallest |w| in each layer.'''
    ...     def scores(self, layer):
    ...         return layer.weight.abs()
    >>> "doc-example-magnitude" in list_strategies()
    True
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"strategy name must be a non-empty string, got {name!r}")

    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"register_strategy decorates Strategy subclasses, got {cls!r}")
        if cls in (Strategy, ScoredStrategy, LayerwiseStrategy, GlobalStrategy):
            raise TypeError("register a subclass, not a base class")
        if name in _REGISTRY and not replace and _REGISTRY[name] is not cls:
            raise ValueError(f"a strategy named {name!r} exists; pass replace=True to override")
        cls.name = name
        if not cls.__dict__.get("description"):
            doc = inspect.getdoc(cls) or ""
            cls.description = doc.splitlines()[0] if doc else name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_strategies() -> list[str]:
    """Names of all registered strategies, built-ins first."""
    return list(_REGISTRY)


def get_strategy(name: str | Strategy, **options: object) -> Strategy:
    """Build the registered strategy ``name`` with ``options`` (e.g. ``granularity="2:4"``).

    >>> get_strategy("n:m").granularity
    NM(n=2, m=4)
    """
    if isinstance(name, Strategy):
        if options:
            raise TypeError("options go with a strategy name, not with a Strategy instance")
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    try:
        return cls(**options)
    except TypeError as exc:
        accepted = [f.name for f in fields(cls)] if hasattr(cls, "__dataclass_fields__") else []
        raise ValueError(
            f"bad options for strategy {name!r}: {exc}; accepted: {', '.join(accepted) or 'none'}"
        ) from exc


def strategy_table() -> pd.DataFrame:
    """One row per registered strategy: name, description, scope, granularity, needs."""
    rows = []
    for name, cls in _REGISTRY.items():
        try:
            granularity = str(cls().granularity)
        except TypeError:  # a strategy whose options have no defaults
            granularity = "?"
        rows.append(
            {
                "name": name,
                "description": cls.description,
                "scope": cls.scope,
                "granularity": granularity,
                "needs": ", ".join(sorted(cls.needs)) or "-",
                "by threshold": cls.by_threshold,
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# Built-ins


@register_strategy("random")
@dataclass(frozen=True)
class RandomStrategy(ScoredStrategy):
    """Prune at random (seeded), the same fraction in every layer: the baseline to beat."""

    by_threshold: ClassVar[bool] = False

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.random_scores(layer.target.shape, seed=layer.seed, fqn=layer.fqn)


class _Magnitude(ScoredStrategy):
    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.magnitude(layer.weight)


class _Taylor(ScoredStrategy):
    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.taylor(layer.weight, layer.gradient())


class _Wanda(ScoredStrategy):
    needs: ClassVar[frozenset[str]] = frozenset({"activations"})

    def unsupported(self, target: Target) -> str | None:
        if not activations_visible(target):
            return _hidden(target, "inputs")
        return super().unsupported(target)

    def scores(self, layer: Layer) -> torch.Tensor:
        return criteria.activation_magnitude(layer.weight, layer.input_norm(), layer.target)


@register_strategy("global-magnitude")
@dataclass(frozen=True)
class GlobalMagnitude(_Magnitude):
    """Prune the smallest |w| across the whole model (one ranking for all layers)."""

    scope: ClassVar[str] = "global"


@register_strategy("layer-magnitude")
@dataclass(frozen=True)
class LayerMagnitude(_Magnitude):
    """Prune the smallest |w| within each layer, the same fraction everywhere."""


@register_strategy("global-magnitude-gradient")
@dataclass(frozen=True)
class GlobalMagnitudeGradient(_Taylor):
    """Prune the smallest |w x grad| (first-order Taylor) across the whole model."""

    scope: ClassVar[str] = "global"


@register_strategy("layer-magnitude-gradient")
@dataclass(frozen=True)
class LayerMagnitudeGradient(_Taylor):
    """Prune the smallest |w x grad| (first-order Taylor) within each layer."""


@register_strategy("global-activation-magnitude")
@dataclass(frozen=True)
class GlobalActivationMagnitude(_Wanda):
    """Prune the smallest |w| x ||input|| (Wanda-style) across the whole model."""

    scope: ClassVar[str] = "global"


@register_strategy("layer-activation-magnitude")
@dataclass(frozen=True)
class LayerActivationMagnitude(_Wanda):
    """Prune the smallest |w| x ||input|| (Wanda-style) within each layer."""


def _hidden(target: Target, what: str) -> str:
    return (
        f"the {what} of {target.fqn} are internal to its {target.module_type} module, where "
        "activation statistics cannot see them; prune it with a weight-only strategy"
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
    p: float = 1

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


@register_strategy("threshold")
@dataclass(frozen=True)
class ThresholdStrategy(GlobalMagnitude):
    """Prune every weight with |w| at or below an absolute threshold."""


@register_strategy("n:m")
@dataclass(frozen=True)
class NMStrategy(_Magnitude):
    """Keep the n largest |w| in every group of m consecutive weights (2:4 by default).

    Args:
        n: Weights kept per group.
        m: Group size.
    """

    by_threshold: ClassVar[bool] = False
    n: int = 2
    m: int = 4
    granularity: Granularity | str = field(default="", repr=False)

    def __post_init__(self) -> None:
        pattern = self.granularity or f"{self.n}:{self.m}"
        object.__setattr__(self, "granularity", parse_granularity(pattern))
        if not isinstance(self.granularity, NM):
            raise ValueError(f"n:m needs an N:M granularity, got {self.granularity}")
        object.__setattr__(self, "n", self.granularity.n)
        object.__setattr__(self, "m", self.granularity.m)
