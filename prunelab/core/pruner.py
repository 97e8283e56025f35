"""The Pruner: a strategy prepared on one model, answering mask requests quickly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import InputError
from ..runtime.checks import check_sparsity, check_threshold
from .calibration import Calibration
from .granularity import Channel
from .masks import Masks
from .strategies import Layer, Strategy, get_strategy, supported_targets
from .targets import (
    Target,
    get_parameter,
    grouped_readers,
    output_layers,
    resolve_targets,
)

__all__ = ["LeftOut", "Pruner", "chosen_layers", "left_out", "prune"]


API_HINT = (
    "prune_outputs=True (get_strategy(name, prune_outputs=True); CLI --prune-outputs; "
    "recipe field prune_outputs: true)"
)


@dataclass(frozen=True)
class LeftOut:
    """Layers a strategy leaves out of pruning, and why.

    Attributes:
        fqns: The target fqns left out (empty when none is).
        why: Which layers and why, in one sentence for people ("" when none is).
    """

    fqns: tuple[str, ...] = ()
    why: str = ""

    def message(self, include: str = API_HINT) -> str:
        """``why`` and how to include the layers (``include`` names the way, e.g. a flag)."""
        return f"{self.why}; prune them too with {include}." if self.fqns else ""

    @property
    def reason(self) -> str:
        """The message for Python users."""
        return self.message()

    @property
    def note(self) -> str | None:
        """A short record for a recipe's provenance (None when nothing is left out)."""
        if not self.fqns:
            return None
        return (
            f"{', '.join(self.fqns)}: the model's output layer(s), kept whole by channel "
            "pruning (prune_outputs: false)"
        )


def left_out(model: nn.Module, strategy: str | Strategy, chosen: Sequence[Target]) -> LeftOut:
    """Which of the ``chosen`` targets ``strategy`` leaves out on ``model``.

    Output-channel pruning leaves out the layers whose outputs are the model's outputs (see
    :func:`prunelab.core.targets.output_layers`): removing a row of the final classifier deletes
    a class outright, whatever its importance. Nothing is left out for other granularities
    or when the strategy has ``prune_outputs=True``.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> from prunelab.core.targets import targets
    >>> left_out(net, "weight-norm-channel", targets(net)).fqns
    ('2.weight',)
    """
    strategy = get_strategy(strategy)
    if strategy.prune_outputs or not isinstance(strategy.granularity, Channel):
        return LeftOut()
    outputs = output_layers(model)
    names = {t.fqn for t in chosen}
    fqns = tuple(fqn for fqn in outputs.fqns if fqn in names)
    if not fqns:
        return LeftOut()
    how = "" if outputs.how == "traced" else f" ({outputs.how})"
    why = (
        f"Left out {', '.join(fqns)}: {'its' if len(fqns) == 1 else 'their'} output channels "
        "are the model's outputs, so "
        f"channel pruning would delete outputs (classes) outright{how}"
    )
    return LeftOut(fqns, why)


def chosen_layers(
    model: nn.Module,
    strategy: Strategy,
    targets: Sequence[Target | str] | None = None,
    *,
    nothing: str = "nothing to prune",
) -> tuple[list[Target], LeftOut]:
    """The targets a strategy works on, and those of them it leaves out (see :func:`left_out`).

    ``targets`` as given, or by default every target the strategy supports (see
    :func:`prunelab.core.strategies.supported_targets`). The one place that decides this for
    :class:`Pruner`, :func:`prunelab.sensitivity` and its estimate.

    Raises:
        ValueError: When every chosen target is left out (``nothing`` leads the message).
    """
    chosen = resolve_targets(model, targets)
    if targets is None:  # by default, the layers this strategy can prune
        chosen = supported_targets(strategy, chosen)
    skipped = left_out(model, strategy, chosen)
    if skipped.fqns and len(skipped.fqns) == len(chosen):
        raise ValueError(f"{nothing} with {strategy.name}. {skipped.reason}")
    return chosen, skipped


class Pruner:
    """A pruning strategy prepared on one model.

    Construction computes the importance scores and sorts them (the expensive part); each
    :meth:`masks` call afterwards is a lookup plus one comparison per layer, cheap enough for
    a slider. The model is never modified, and a Pruner holds no reference to its weights.

    With output-channel granularity, the layers whose outputs are the model's outputs (the
    final classifier) are left out: their masks keep everything and :attr:`left_out` says
    which and why. A strategy built with ``prune_outputs=True`` prunes them too.

    Args:
        model: The dense model.
        strategy: A registered name (see :func:`prunelab.list_strategies`) or a Strategy.
        targets: Which tensors to prune: Targets, fqns or glob patterns (default: all that
            the strategy supports, :meth:`Strategy.unsupported`).
        calibration: Data for data-driven strategies (gradients, activations).
        seed: Seed for random strategies.

    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pruner = Pruner(net, "global-magnitude")
    >>> round(pruner.masks(sparsity=0.5).sparsity(), 2)
    0.5
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: str | Strategy,
        *,
        targets: Sequence[Target | str] | None = None,
        calibration: Calibration | None = None,
        seed: int = 0,
    ) -> None:
        _refuse_reparametrised(model)
        self.strategy = get_strategy(strategy)
        self.targets, self.left_out = chosen_layers(model, self.strategy, targets)
        self._check_calibration(model, calibration)
        # a layer that a grouped convolution reads is pruned by position (see Channel)
        readers = (
            grouped_readers(model, self.targets)
            if isinstance(self.strategy.granularity, Channel)
            else {}
        )
        self._scored = {
            t.fqn: replace(t, out_groups=readers[t.fqn]) if t.fqn in readers else t
            for t in self.targets
        }
        layers = [
            Layer(
                target=self._scored[t.fqn],
                weight=_finite(_for_scoring(get_parameter(model, t.fqn)), t.fqn),
                calibration=calibration,
                seed=seed,
            )
            for t in self.targets
            if t.fqn not in self.left_out.fqns
        ]
        # a strategy whose groups span several tensors (attention heads) needs the model
        prepare_model = getattr(self.strategy, "prepare_model", None)
        self._selection = (
            prepare_model(model, layers) if prepare_model else self.strategy.prepare(layers)
        )
        self._by_fqn = {t.fqn: t for t in self.targets}

    def _check_calibration(self, model: nn.Module, calibration: Calibration | None) -> None:
        needs = self.strategy.needs
        if calibration is None:
            if needs:
                raise ValueError(
                    f"strategy {self.strategy.name!r} needs calibration data "
                    f"({', '.join(sorted(needs))}): pass "
                    "calibration=prunelab.Calibration(model, data)"
                )
            return
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a prunelab.Calibration, got {calibration!r}")
        if calibration.model is not model:
            raise ValueError("calibration was computed on a different model than the one pruned")

    def masks(
        self,
        *,
        sparsity: float | None = None,
        threshold: float | None = None,
        per_layer: Mapping[str, float] | None = None,
    ) -> Masks:
        """Masks at a sparsity (fraction zeroed) or an absolute score threshold.

        Args:
            sparsity: Fraction of weights to zero, in [0, 1].
            threshold: Prune every group whose score is at or below this value.
            per_layer: ``{fqn: sparsity}`` overriding the rule for those layers.

        Exactly one of ``sparsity`` and ``threshold`` is required, unless ``per_layer``
        covers every target or the strategy's pattern fixes the sparsity (N:M).
        """
        overrides = self._check_overrides(per_layer)
        uncovered = [
            fqn for fqn in self._by_fqn if fqn not in overrides and fqn not in self.left_out.fqns
        ]
        if sparsity is not None and threshold is not None:
            raise ValueError("give either sparsity or threshold, not both")
        if threshold is not None:
            if not self.strategy.by_threshold:
                raise ValueError(
                    f"strategy {self.strategy.name!r} does not select by threshold; "
                    "give a sparsity instead"
                )
            threshold = check_threshold(threshold)
        elif sparsity is not None:
            sparsity = check_sparsity(sparsity)
        elif uncovered and self.strategy.fixed_sparsity is None:
            raise ValueError(
                "give a sparsity (fraction of weights zeroed, in [0, 1]) or a threshold"
                + (f"; per_layer does not cover {uncovered[:3]}" if overrides else "")
            )
        chosen = self._selection.masks(sparsity=sparsity, threshold=threshold, per_layer=overrides)
        full = {
            fqn: chosen[fqn] if fqn in chosen else torch.ones(t.shape, dtype=torch.bool)
            for fqn, t in self._by_fqn.items()
        }
        return self._selection.result(Masks(full, coupled=self._coupled(full)))

    def _check_overrides(self, per_layer: Mapping[str, float] | None) -> dict[str, float]:
        if per_layer is None:
            return {}
        if not isinstance(per_layer, Mapping):
            raise TypeError("per_layer must be a mapping {fqn: sparsity}")
        unknown = [fqn for fqn in per_layer if fqn not in self._by_fqn]
        if unknown:
            raise ValueError(
                f"per_layer names tensors that are not targets of this pruner: {unknown}; "
                f"targets: {list(self._by_fqn)[:12]}"
            )
        checked = {
            fqn: check_sparsity(value, what=f"sparsity for {fqn!r}")
            for fqn, value in per_layer.items()
        }
        named = [fqn for fqn, value in checked.items() if fqn in self.left_out.fqns and value]
        if named:
            raise ValueError(f"per_layer prunes {named}, which is left out. {self.left_out.reason}")
        return {fqn: value for fqn, value in checked.items() if fqn not in self.left_out.fqns}

    def _coupled(self, full: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        extra = getattr(self._selection, "coupled", None)
        if extra is not None:  # tensors the selection masks that are not targets (heads)
            return extra(full)
        # A removed output channel must also lose its bias, or it still outputs a constant.
        if not isinstance(self.strategy.granularity, Channel):
            return {}
        coupled = {}
        for fqn, mask in full.items():
            target = self._by_fqn[fqn]
            if target.bias is not None:
                other = [d for d in range(mask.ndim) if d != target.out_dim]
                coupled[target.bias] = mask.any(dim=other) if other else mask
        return coupled

    def implied_thresholds(self, sparsity: float) -> dict[str, float]:
        """Per layer, the score threshold that ``sparsity`` amounts to.

        For a global strategy every layer gets the same value; empty for strategies that do
        not rank scores.
        """
        return self._selection.implied_thresholds(check_sparsity(sparsity))

    def implied_sparsity(self, threshold: float) -> float:
        """The overall sparsity that ``threshold`` gives."""
        return self.masks(threshold=threshold).sparsity()

    def scores(self) -> dict[str, torch.Tensor]:
        """Per layer, the group scores the strategy ranks (per element or per channel).

        A grouped convolution's channels are ranked by position (see
        :class:`~prunelab.core.granularity.Channel`): each output channel shows its position's
        score, so there is still one score per output channel.
        """
        scores = self._selection.scores()
        granularity = self.strategy.granularity
        if not isinstance(granularity, Channel):
            return scores
        return {
            fqn: granularity.per_channel(value, self._scored[fqn]) if value.ndim == 1 else value
            for fqn, value in scores.items()
        }

    def score_range(self) -> tuple[float, float] | None:
        """Smallest and largest score (the useful range of a threshold), or None."""
        return self._selection.score_range()


def _refuse_reparametrised(model: nn.Module) -> None:
    """Refuse a model carrying ``torch.nn.utils.prune`` masks (``weight_orig`` with
    ``weight_mask``, from :func:`prunelab.apply` or torch's own pruning): its weights are
    computed from them on each forward, so they are no parameters prunelab could find, score or
    mask, and the masks it carries would be lost silently.

    Raises:
        InputError: Naming the first such weight and saying to bake the model first.
    """
    for module_fqn, module in model.named_modules():
        for name in module._parameters:
            base = name.removesuffix("_orig")
            if name != base and f"{base}_mask" in module._buffers:
                fqn = f"{module_fqn}.{base}" if module_fqn else base
                raise InputError(
                    f"the model carries torch.nn.utils.prune masks ({fqn}_orig and "
                    f"{fqn}_mask, as prunelab.apply makes them): write them in first with "
                    "model = prunelab.bake(model), then prune that"
                )


def _for_scoring(weight: torch.Tensor) -> torch.Tensor:
    # float16 overflows past 65504 and both half types keep 8-11 bits of mantissa: norms,
    # |w| x ||x|| and |w x g| in them saturate or tie, so strategies see float32 copies
    weight = weight.detach()
    return weight.float() if weight.dtype in (torch.float16, torch.bfloat16) else weight


def _finite(weight: torch.Tensor, fqn: str) -> torch.Tensor:
    # NaN and inf survive a sum, so one reduction (no temporary) rules them out
    if weight.is_floating_point() and not bool(torch.isfinite(weight.sum())):
        bad = int((~torch.isfinite(weight)).sum())
        if bad:
            raise ValueError(f"{fqn} has {bad} NaN/inf values; pruning scores would be meaningless")
    return weight


def prune(
    model: nn.Module,
    strategy: str | Strategy,
    *,
    sparsity: float | None = None,
    threshold: float | None = None,
    calibration: Calibration | None = None,
    seed: int = 0,
) -> Masks:
    """One-shot: masks for ``model`` with ``strategy`` at a sparsity or threshold.

    With output-channel strategies the model's output layers are left out (kept whole)
    unless the strategy has ``prune_outputs=True``; see :class:`Pruner`.

    >>> net = nn.Sequential(nn.Linear(10, 10))
    >>> prune(net, "layer-magnitude", sparsity=0.3).per_layer()["kept"].tolist()
    [70]
    """
    pruner = Pruner(model, strategy, calibration=calibration, seed=seed)
    return pruner.masks(sparsity=sparsity, threshold=threshold)
