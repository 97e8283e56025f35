"""The budgets a recipe is planned under, and what each layer's sparsity saves of them.

A budget caps one cost of the pruned model: its overall sparsity, its predicted drop, its
parameters, its FLOPs, or its latency on this machine (for channel recipes, from a per-layer
latency table measured once: :class:`LatencyProfile`, like Sparsify's performance profile).
Every cost is a sum over layers plus a part no layer's sparsity changes, so the solver can
trade drop against cost layer by layer (:class:`Costs`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..analysis.flops import flops_by_layer, model_stats
from ..analysis.speed import timed_rounds
from ..core.apply import copy_model
from ..core.targets import get_parameter
from ..runtime.functional import run_device

__all__ = ["BUDGET_KINDS", "Budget", "Costs", "LatencyProfile"]

BUDGET_KINDS = ("sparsity", "drop", "params", "flops", "latency", "speedup")
_LATENCY_LEVELS = (0.0, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class Budget:
    """What the recipe may cost: one kind and its value.

    Kinds: ``"sparsity"`` (overall fraction of the analysed weights zeroed, met exactly),
    ``"drop"`` (largest acceptable drop of the metric), ``"params"`` (parameters left in the
    model, counting zeros as removed), ``"flops"`` (effective FLOPs of one forward pass),
    ``"latency"`` (seconds per forward pass of the shrunk model, channel recipes) and
    ``"speedup"`` (dense latency / this, e.g. 1.5 for "1.5x faster").

    >>> Budget("speedup", 1.5)
    Budget(kind='speedup', value=1.5)
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ValueError(f"unknown budget {self.kind!r}; accepted: {', '.join(BUDGET_KINDS)}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise TypeError(f"a budget's value is a number, got {self.value!r}")
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"a {self.kind} budget must be a finite number >= 0, got {self.value}")
        if self.kind == "sparsity" and self.value > 1:
            raise ValueError(f"a sparsity budget is in [0, 1], got {self.value}")
        if self.kind == "speedup" and self.value < 1:
            raise ValueError(f"a speedup is at least 1 (1.5: 1.5x faster), got {self.value}")

    @property
    def needs_model(self) -> bool:
        """Whether the layer costs come from the model (parameters, FLOPs, latency)."""
        return self.kind in ("params", "flops", "latency", "speedup")


@dataclass(frozen=True)
class LatencyProfile:
    """Seconds per forward pass of each layer with a fraction of its output channels removed,
    measured once on this machine; the rest of the model (what no layer's sparsity changes)
    is the dense model's latency minus the layers' dense times.

    A layer is timed alone, as a smaller copy of itself (fewer output channels) on the input
    it gets in the model. The next layer's inputs shrink too when a channel goes; the profile
    leaves that out, so its prediction errs slow (a real shrunk model is at least as fast).

    >>> net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    >>> profile = LatencyProfile.measure(net, torch.randn(8, 16), repeats=3)
    >>> sorted(profile.seconds)
    ['0.weight', '2.weight']
    """

    levels: tuple[float, ...]
    seconds: Mapping[str, tuple[float, ...]]  # per layer, at each level
    dense_seconds: float
    rest_seconds: float = field(default=0.0)

    @classmethod
    def measure(
        cls,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        levels: Sequence[float] = _LATENCY_LEVELS,
        repeats: int = 15,
        device: torch.device | str | None = None,
    ) -> LatencyProfile:
        """Time each Linear/Conv layer's smaller copies and the dense model (median of
        ``repeats``, interleaved by :func:`~prunelab.analysis.timed_rounds`)."""
        run_on = run_device(model, device)
        net = copy_model(model).eval().to(run_on)
        x = example_input.to(run_on)
        inputs = _layer_inputs(net, x)
        nets = {"model": (net, x)}
        for name, (module, seen) in inputs.items():
            for level in levels:
                nets[f"{name}@{level}"] = (_smaller(module, level).to(run_on), seen)
        times = timed_rounds(nets, repeats=repeats, warmup=2, device=run_on)
        median = {key: statistics.median(v) / 1000 for key, v in times.items()}
        seconds = {
            f"{name}.weight": tuple(median[f"{name}@{lv}"] for lv in levels) for name in inputs
        }
        dense = median["model"]
        rest = max(dense - sum(v[0] for v in seconds.values()), 0.0)
        return cls(tuple(levels), seconds, dense, rest)

    def layer_seconds(self, fqn: str, sparsity: float) -> float:
        """The layer's time at ``sparsity`` (interpolated between measured levels; a layer
        the profile lacks costs nothing that pruning can save)."""
        if fqn not in self.seconds:
            return 0.0
        # a smaller layer is never slower: noise in the timings must not invert the trade
        times = np.minimum.accumulate(np.asarray(self.seconds[fqn]))
        return float(np.interp(sparsity, self.levels, times))


def _layer_inputs(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """The input each Linear/Conv2d module gets in one pass of ``x`` (hooks removed after)."""
    seen: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    handles = []
    for name, module in net.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name:

            def hook(mod, args, _out, name=name):
                seen.setdefault(name, (mod, args[0].detach()))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _smaller(module: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``module`` with ``sparsity`` of its output channels removed (at least one)."""
    if isinstance(module, nn.Linear):
        kept = max(1, round(module.out_features * (1 - sparsity)))
        return nn.Linear(module.in_features, kept, bias=module.bias is not None).eval()
    kept = max(1, round(module.out_channels * (1 - sparsity)))
    return nn.Conv2d(
        module.in_channels,
        kept if module.groups == 1 else module.groups * max(1, kept // module.groups),
        module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
    ).eval()


@dataclass(frozen=True)
class Costs:
    """A cost of the model as ``fixed + sum over layers of cost(layer, sparsity)``.

    ``per_layer[fqn]`` is the layer's dense cost; linear costs shrink with the kept fraction,
    a latency profile gives its own curve.

    >>> costs = Costs.linear({"a": 100, "b": 300}, fixed=10)
    >>> costs.total({"a": 0.5, "b": 0.0})
    360.0
    """

    per_layer: Mapping[str, float]
    fixed: float = 0.0
    profile: LatencyProfile | None = None

    @classmethod
    def linear(cls, per_layer: Mapping[str, float], *, fixed: float = 0.0) -> Costs:
        return cls(dict(per_layer), float(fixed))

    def layer(self, fqn: str, sparsity: float) -> float:
        """The layer's cost at ``sparsity``."""
        if self.profile is not None:
            return self.profile.layer_seconds(fqn, sparsity)
        return float(self.per_layer.get(fqn, 0.0)) * (1.0 - sparsity)

    def total(self, layers: Mapping[str, float]) -> float:
        """The model's cost with ``layers`` at their sparsities (others dense)."""
        dense = sum(self.layer(fqn, 0.0) for fqn in self.per_layer if fqn not in layers)
        return self.fixed + dense + sum(self.layer(fqn, s) for fqn, s in layers.items())

    @classmethod
    def for_budget(
        cls,
        budget: Budget,
        elements: Mapping[str, int],
        *,
        model: nn.Module | None = None,
        example_input: torch.Tensor | None = None,
        profile: LatencyProfile | None = None,
    ) -> tuple[Costs, float]:
        """The costs a budget caps, and the cap: what the solver must bring the total under."""
        if budget.kind == "sparsity":
            total = sum(elements.values())
            return cls.linear(elements), (1 - budget.value) * total
        if budget.needs_model and model is None:
            raise ValueError(f"a {budget.kind} budget needs the model (model=...)")
        if budget.kind == "params":
            fixed = sum(p.numel() for p in model.parameters()) - sum(elements.values())
            _check_layers(model, elements)
            return cls.linear(elements, fixed=fixed), budget.value
        if example_input is None:
            raise ValueError(f"a {budget.kind} budget needs an example input (example_input=...)")
        if budget.kind == "flops":
            table = flops_by_layer(model, example_input=example_input)
            per = {r.fqn: float(r.flops) for r in table.itertuples() if r.fqn in elements}
            whole = float(model_stats(model, example_input=example_input)["flops"])
            return cls.linear(per, fixed=max(whole - sum(per.values()), 0.0)), budget.value
        profile = profile or LatencyProfile.measure(model, example_input)
        per = {fqn: profile.layer_seconds(fqn, 0.0) for fqn in elements}
        costs = cls(per, profile.rest_seconds, profile)
        cap = budget.value if budget.kind == "latency" else profile.dense_seconds / budget.value
        return costs, cap


def _check_layers(model: nn.Module, elements: Mapping[str, int]) -> None:
    for fqn in elements:
        get_parameter(model, fqn)  # raises, naming the layer, if the table is of another model
