"""Frozen layers: parameters that training leaves bit-identical."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from ..core.apply import bake
from ..core.masks import Masks
from .config import _names

__all__ = ["freeze", "unfreeze"]


def _frozen_parameters(model: nn.Module, layers: Sequence[str]) -> set[str]:
    """Names of the parameters that the module or parameter patterns ``layers`` match."""
    patterns = _names(layers, "layers")
    modules = [name for name, _ in model.named_modules() if name]
    params = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        hit_modules = [m for m in modules if fnmatch.fnmatchcase(m, pattern)]
        hit = {p for p in params if fnmatch.fnmatchcase(p, pattern)}
        hit |= {p for p in params for m in hit_modules if p.startswith(m + ".")}
        if not hit:
            raise ValueError(
                f"{pattern!r} names no layer or parameter with parameters; layers: "
                f"{', '.join(modules[:12])}{' ...' if len(modules) > 12 else ''}"
            )
        chosen |= hit
    return chosen


def _set_trainable(model: nn.Module, layers: Sequence[str] | None, trainable: bool) -> nn.Module:
    copied = bake(model)
    names = (
        {n for n, _ in copied.named_parameters()}
        if layers is None
        else _frozen_parameters(copied, layers)
    )
    for name, param in copied.named_parameters():
        if name in names:
            param.requires_grad_(trainable)
    return copied


def freeze(model: nn.Module, layers: str | Sequence[str]) -> nn.Module:
    """A copy of ``model`` whose parameters in ``layers`` have ``requires_grad=False``.

    The training functions train only parameters that require gradients, so a frozen copy
    passed to :func:`finetune` keeps those layers bit-identical (they are checked after
    training). ``TrainConfig(frozen=...)`` does the same without a copy of your own.

    Args:
        model: The model (not modified).
        layers: Module or parameter names; glob patterns allowed (``"fc*"``).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> [p.requires_grad for p in freeze(net, ["0"]).parameters()]
    [False, False, True, True]
    """
    return _set_trainable(model, layers, False)


def unfreeze(model: nn.Module, layers: str | Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` whose parameters in ``layers`` (default: all) require gradients.

    >>> net = freeze(nn.Linear(2, 2), ["weight"])
    >>> [p.requires_grad for p in unfreeze(net).parameters()]
    [True, True]
    """
    return _set_trainable(model, layers, True)


def _frozen_modules(net: nn.Module) -> list[nn.Module]:
    # modules whose own parameters are all frozen stay in eval mode: BatchNorm statistics too
    return [
        m
        for m in net.modules()
        if list(m.parameters(recurse=False))
        and not any(p.requires_grad for p in m.parameters(recurse=False))
    ]


def _changed(net: nn.Module, before: dict[str, torch.Tensor], masks: Masks | None) -> list[str]:
    """Frozen parameters that differ from their start, beyond zeros that pruning wrote in."""
    kept = masks.all() if masks is not None else {}
    changed = []
    for name, param in net.named_parameters():
        if name in before:
            expected = before[name]
            if name in kept:
                expected = expected * kept[name].to(expected.device)
            if not torch.equal(param.detach(), expected):
                changed.append(name)
    return changed
