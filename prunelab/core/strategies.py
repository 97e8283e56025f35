"""Pruning strategies: a criterion, a scope and a granularity, kept in a registry.

Scope and granularity are options of a scored strategy, as its criterion's own options are
(``get_strategy("magnitude", scope="global", granularity="channel")``); the built-in names
(``global-magnitude``, ``layer-magnitude``, ...) are presets that fix some of them. Each
option is described (:class:`Option`, :func:`strategy_options`) so that the app draws a
control for it, for a strategy a user registered too.

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
from dataclasses import dataclass, field, is_dataclass
from typing import ClassVar

import pandas as pd
import torch

from .granularity import NM, UNSTRUCTURED, Channel, Granularity, parse_granularity
from .options import GRANULARITY, HIDDEN, SCOPE, SCOPES, Option, _plain, options_of
from .selection import Layer, Selection, _NMSelection, _PerCall, _Ranked
from .targets import Target

__all__ = [
    "GlobalStrategy",
    "Layer",
    "LayerwiseStrategy",
    "ScoredStrategy",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "strategy_choices",
    "strategy_options",
    "strategy_table",
    "supported_targets",
]


class Strategy:
    """Base of all strategies. Subclass one of the three kinds below, not this one.

    Class attributes:
        name: Registry name (set by :func:`register_strategy`; a strategy built from a preset
            such as ``global-magnitude`` carries the preset's name).
        description: One line for menus (default: first line of the docstring).
        needs: Calibration statistics required: ``"gradients"`` and/or ``"activations"``.
        by_threshold: Whether masks can be asked for by absolute threshold.
        seeded: Whether its masks depend on the seed (it draws random numbers).
        magnitude_scores: Whether its scores are the weights' magnitudes |w|, so that a
            threshold on the scores is a cut-off on the weights' axis.
        scope: ``"layer"`` (each layer pruned to the sparsity) or ``"global"`` (one ranking
            across all layers).
        prune_outputs: With output-channel granularity, also prune the layers whose outputs
            are the model's outputs (False: they are left out, as the classes would go).
    """

    name: str = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    by_threshold: ClassVar[bool] = False
    seeded: ClassVar[bool] = False
    magnitude_scores: ClassVar[bool] = False
    scope: str = "layer"
    granularity: Granularity = UNSTRUCTURED
    prune_outputs: bool = False

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        """Do the per-model work (scores, sorting) once and return a :class:`Selection`."""
        raise NotImplementedError

    @property
    def fixed_sparsity(self) -> float | None:
        """The only sparsity this strategy produces, if its pattern fixes it (N:M)."""
        return self.granularity.sparsity if isinstance(self.granularity, NM) else None

    @property
    def selects_by(self) -> tuple[str, ...]:
        """How masks are asked for: ``("sparsity", "threshold")``, ``("sparsity",)``, or
        ``()`` when the pattern fixes the sparsity (N:M)."""
        if self.fixed_sparsity is not None:
            return ()
        return ("sparsity", "threshold") if self.by_threshold else ("sparsity",)

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
        def decide(chosen: list[Layer], sparsity: float) -> dict[str, torch.Tensor]:
            return {layer.fqn: self.layer_masks(layer, sparsity) for layer in chosen}

        return _PerCall(self.name, type(self).__name__, layers, decide)


class GlobalStrategy(Strategy):
    """A strategy deciding for all layers together. Override :meth:`model_masks`."""

    scope: str = "global"

    def model_masks(self, layers: Sequence[Layer], sparsity: float) -> dict[str, torch.Tensor]:
        """Masks for every layer such that the overall sparsity is ``sparsity``."""
        raise NotImplementedError

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        def decide(chosen: list[Layer], sparsity: float) -> dict[str, torch.Tensor]:
            result = self.model_masks(chosen, sparsity)
            if not isinstance(result, Mapping):
                raise TypeError("model_masks must return a dict {fqn: bool tensor}")
            return dict(result)

        return _PerCall(self.name, type(self).__name__, layers, decide)


# ----------------------------------------------------------------------------------------
# Score-based strategies: sorted once, selected by lookup


@dataclass(frozen=True)
class ScoredStrategy(Strategy):
    """A strategy defined by importance scores. Override :meth:`scores`.

    Scores are computed and sorted once per model; masks for any sparsity or threshold
    then cost a lookup and a comparison. A subclass's own options are dataclass fields; the
    app draws a control for each (see :class:`~prunelab.core.options.Option`).

    Args:
        granularity: ``"unstructured"``, ``"channel"``, ``"input-channel"`` or ``"N:M"``.
        scope: ``"layer"`` (each layer pruned to the sparsity) or ``"global"`` (one ranking
            across all layers); keyword only.
        prune_outputs: With ``"channel"`` granularity, prune the model's output layers too
            (keyword only; by default they are left out, see :class:`prunelab.Pruner`).
    """

    by_threshold: ClassVar[bool] = True
    granularity: Granularity | str = field(default=UNSTRUCTURED, metadata={"option": GRANULARITY})
    scope: str = field(default="layer", kw_only=True, metadata={"option": SCOPE})
    # the app has a control of its own for it, which names the layers left out
    prune_outputs: bool = field(default=False, kw_only=True, metadata=HIDDEN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", parse_granularity(self.granularity))
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if not isinstance(self.prune_outputs, bool):
            raise ValueError(f"prune_outputs must be True or False, got {self.prune_outputs!r}")
        # named after the preset its options amount to ("global-magnitude"), else its class
        object.__setattr__(self, "name", _preset_name(self))

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
        target = layer.target
        if isinstance(granularity, Channel) and tuple(scores.shape) == (
            target.shape[target.out_dim],
        ):
            # one score per output channel: a grouped convolution ranks positions (see Channel)
            return granularity.pool(scores.detach(), target)
        groups = target.numel // granularity.group_size(target)
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
        return _Ranked(self.granularity, scores, targets, whole_model=self.scope == "global")


# ----------------------------------------------------------------------------------------
# Registry: strategy classes, and presets that fix some of a class's options


@dataclass(frozen=True)
class _Preset:
    """A registry name for a strategy class with some options fixed (``global-magnitude``)."""

    cls: type[Strategy]
    fixed: Mapping[str, object]
    description: str


_REGISTRY: dict[str, type[Strategy] | _Preset] = {}
# the built-ins' menu order, by the module each lives in: the classic criteria, attention
# heads, then SparseGPT. The modules import one another, so the order they register in
# depends on which of them a program imports first; menus should not.
_BUILTIN_MODULES = ("builtin_strategies", "heads", "head_scores", "sparsegpt_strategy")


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


def _preset(name: str, cls: type[Strategy], description: str, **fixed: object) -> None:
    """Register ``name`` as ``cls`` with the ``fixed`` options (a built-in's classic name)."""
    _REGISTRY[name] = _Preset(cls, fixed, description)


def _resolve(name: str) -> tuple[type[Strategy], Mapping[str, object]]:
    entry = _REGISTRY.get(name)
    if entry is None:
        listed = list_strategies()
        behind = ", ".join(n for n in _REGISTRY if n not in listed)
        raise ValueError(
            f"unknown strategy {name!r}; valid names: {', '.join(listed)}"
            + (f"; and the criteria of presets (they take scope=...): {behind}" if behind else "")
        )
    if isinstance(entry, _Preset):
        return entry.cls, entry.fixed
    return entry, {}


def _preset_name(strategy: Strategy) -> str:
    """The first preset whose fixed options ``strategy`` has, else its class's name."""
    for name, entry in _REGISTRY.items():
        if isinstance(entry, _Preset) and entry.cls is type(strategy) and _has(strategy, entry):
            return name
    return type(strategy).name


def _has(strategy: Strategy, preset: _Preset) -> bool:
    return all(_plain(getattr(strategy, k)) == _plain(v) for k, v in preset.fixed.items())


def list_strategies() -> list[str]:
    """Names of all registered strategies, built-ins first.

    A class that presets stand for is listed through them: ``magnitude`` is offered as
    ``global-magnitude`` and ``layer-magnitude`` (:func:`get_strategy` takes both forms).
    """
    behind = {entry.cls for entry in _REGISTRY.values() if isinstance(entry, _Preset)}
    listed = [n for n, e in _REGISTRY.items() if isinstance(e, _Preset) or e not in behind]
    return sorted(listed, key=_menu_rank)  # stable: each module keeps its own order


def _menu_rank(name: str) -> int:
    # built-ins by module (see _BUILTIN_MODULES), then user strategies in registration order
    entry = _REGISTRY[name]
    module = (entry.cls if isinstance(entry, _Preset) else entry).__module__
    package, _, leaf = module.rpartition(".")
    if package == __package__ and leaf in _BUILTIN_MODULES:
        return _BUILTIN_MODULES.index(leaf)
    return len(_BUILTIN_MODULES)


def get_strategy(name: str | Strategy, **options: object) -> Strategy:
    """Build the registered strategy ``name`` with ``options`` (e.g. ``granularity="2:4"``).

    A preset is its class with some options fixed: ``get_strategy("global-magnitude")`` is
    ``get_strategy("magnitude", scope="global")``, named after the preset either way.

    >>> get_strategy("n:m").granularity
    NM(n=2, m=4)
    >>> get_strategy("magnitude", scope="global").name
    'global-magnitude'
    """
    if isinstance(name, Strategy):
        if options:
            raise TypeError("options go with a strategy name, not with a Strategy instance")
        return name
    cls, fixed = _resolve(name)
    for key, value in options.items():
        if key in fixed and _plain(value) != _plain(fixed[key]):
            raise ValueError(
                f"strategy {name!r} has {key}={fixed[key]!r}; for {key}={value!r} use "
                f"{cls.name!r} with {key}={value!r}"
            )
    try:
        strategy = cls(**{**fixed, **options})
    except TypeError as exc:
        # in the constructor's order: positional options, then keyword-only ones (scope, ...)
        accepted = list(inspect.signature(cls).parameters) if is_dataclass(cls) else []
        raise ValueError(
            f"bad options for strategy {name!r}: {exc}; accepted: {', '.join(accepted) or 'none'}"
        ) from exc
    if fixed:  # "threshold" and "global-magnitude" are the same options under two names
        object.__setattr__(strategy, "name", name)
    return strategy


def strategy_options(name: str) -> tuple[Option, ...]:
    """The options strategy ``name`` leaves to choose, described for controls (a preset's
    fixed options are not among them).

    >>> [o.name for o in strategy_options("weight-norm-channel")]
    ['granularity', 'scope', 'p']
    >>> [o.name for o in strategy_options("global-magnitude")]
    ['granularity']
    """
    cls, fixed = _resolve(name)
    return options_of(cls, fixed=fixed)


def strategy_choices(strategy: Strategy) -> dict[str, object]:
    """The options ``strategy`` was built with that differ from its registered defaults, as
    plain values: with its name, what rebuilds it (``get_strategy(name, **choices)``).
    Granularity and ``prune_outputs`` are left out: recipes and tables keep them apart.

    >>> strategy_choices(get_strategy("weight-norm-channel", p=2))
    {'p': 2}
    >>> strategy_choices(get_strategy("global-magnitude"))
    {}
    """
    chosen = {}
    for option in strategy_options(strategy.name):
        if option.name in ("granularity", "prune_outputs"):
            continue
        value = _plain(getattr(strategy, option.name))
        if value != option.default:
            chosen[option.name] = value
    return chosen


def strategy_table() -> pd.DataFrame:
    """One row per listed strategy: name, description, criterion (the class it builds), scope,
    granularity, needs, whether it selects by threshold, and the options left to choose."""
    rows = []
    for name in list_strategies():
        entry = _REGISTRY[name]
        cls, _ = _resolve(name)
        try:
            made = get_strategy(name)
            scope, granularity = made.scope, str(made.granularity)
            by_threshold = made.by_threshold  # an option may decide it (wanda's comparison)
        except ValueError:  # a strategy whose options have no defaults
            scope, granularity, by_threshold = cls.scope, "?", cls.by_threshold is True
        rows.append(
            {
                "name": name,
                "description": entry.description if isinstance(entry, _Preset) else cls.description,
                "criterion": cls.name,
                "scope": scope,
                "granularity": granularity,
                "needs": ", ".join(sorted(cls.needs)) or "-",
                "by threshold": by_threshold,
                "options": ", ".join(o.name for o in strategy_options(name)) or "-",
            }
        )
    return pd.DataFrame(rows)


# the built-in strategies register themselves when their module is imported (after the
# registry above exists, so that circular import is safe)
from . import builtin_strategies  # noqa: E402, F401
