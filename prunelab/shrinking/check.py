"""The output check of :func:`~prunelab.shrinking.shrink`: the shrunk model must compute what
the masked model computes, and the comparison must be able to fail.

A check that compares outputs with an absolute tolerance passes vacuously on a model whose
outputs are tiny or constant: torchvision's random-weight MobileNets output about 1e-12, and
ViT's classifier starts at exactly zero, so any shrunk model "equals" the masked one. This
check therefore

* compares every tensor **relative to its own scale** (largest magnitude), never with an
  absolute floor;
* runs **two different inputs** (the example input, or its centre crop, and a random input with
  the same mean and spread, or shuffled token ids) and measures how much each compared tensor
  depends on the input: a tensor whose input-dependent part is under :data:`SPREAD` of its scale
  cannot show a wrongly removed channel, so it does not count as checked;
* compares, besides the outputs, the **inputs of the output layers** (the classifier's
  features), keeping only the channels that remain in the shrunk model. Random weights often
  make the outputs degenerate while the features before the head are not (a zero-initialised
  head outputs zeros whatever its input; a bias-dominated one outputs nearly the same logits
  for every input). Comparing the features is better than perturbing the head's weights: the
  masked model and the shrunk one stay exactly the model that is returned, nothing is copied,
  and a trained model is checked the same way;
* raises :class:`~prunelab.errors.ShrinkError` when **nothing** compared depends on the input
  (or is finite), instead of passing;
* where the model has branches that run only in training (auxiliary classifiers), compares in
  train mode as well (see :func:`~prunelab.shrinking.graph.train_mode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ShrinkError
from .graph import _shapes

__all__ = ["CHECK_SIDE", "RTOL", "RTOL_TRAIN", "SPREAD"]

#: A compared tensor may differ by this fraction of its largest magnitude (float32 sums of
#: the same products in another order stay far below it).
RTOL = 1e-4
#: A tensor counts as checked only if its two inputs' values differ by at least this fraction
#: of its largest magnitude: a wrong channel moves a tensor by about its input-dependent part,
#: which must then exceed the tolerance (10x :data:`RTOL`; 10x :data:`RTOL_TRAIN` in train
#: mode).
SPREAD = 10 * RTOL
#: In train mode the tolerance is looser: batch statistics over the two probes subtract the
#: part of a value the probes share (large in a random-weight model) and divide by the
#: variance of a few values (an auxiliary head's 1x1 maps), which magnifies rounding up to
#: ~100x (Inception v3's auxiliary head: 2.6e-3 of the scale). A wrongly removed channel moves
#: these normalised values by about their own size, far above it.
RTOL_TRAIN = 1e-2
#: The check crops the input's dimensions after the channels to this size.
CHECK_SIDE = 64


@dataclass(frozen=True)
class Head:
    """An output layer whose input the check compares: the dimension of its input that holds
    channels, and the input channels that remain after shrinking (None: all)."""

    dim: int
    kept: torch.Tensor | None


@dataclass
class _Run:
    """What one model computed on the probes: per probe, the output and the heads' inputs."""

    outputs: list[object] = field(default_factory=list)
    features: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    shapes: list[object] = field(default_factory=list)  # of each forward's whole output


@dataclass(frozen=True)
class Probe:
    """The inputs the check runs: one batch holding both probes (``split`` samples each), or,
    for a model whose output is not per sample, each probe on its own (``split`` 0)."""

    inputs: tuple[torch.Tensor, ...]
    split: int


def _variant(x: torch.Tensor) -> torch.Tensor:
    """A second input unlike ``x``, of its shape, dtype and range (seeded: the same each run)."""
    gen = torch.Generator().manual_seed(0)
    if x.is_floating_point():
        spread = float(x.float().std()) if x.numel() > 1 else 0.0
        noise = torch.randn(x.shape, generator=gen) * (spread or 1.0) + float(x.float().mean())
        return noise.to(dtype=x.dtype, device=x.device)
    if x.dtype == torch.bool or x.numel() == 0:
        return ~x if x.dtype == torch.bool else x
    low, high = int(x.min()), int(x.max())  # e.g. token ids: stay within those seen
    if low == high:
        low = min(0, low)
    return torch.randint(low, high + 1, x.shape, generator=gen).to(dtype=x.dtype, device=x.device)


def _smaller(example_input: torch.Tensor, side: int = CHECK_SIDE) -> torch.Tensor | None:
    """The first sample of ``example_input``, its dimensions after the channels centre-cropped
    to at most ``side``; None when that is ``example_input`` itself."""
    if example_input.ndim == 0:
        return None
    small = example_input[:1]
    for dim in range(2, small.ndim):  # (batch, channels, *spatial) for convolutions
        size = small.shape[dim]
        if size > side:
            small = small.narrow(dim, (size - side) // 2, side)
    return None if small.shape == example_input.shape else small


def _batched(shapes: object, batch: int, new: int) -> object:
    """``shapes`` (from :func:`_shapes`) as they are for a batch of ``new`` instead of ``batch``."""
    if isinstance(shapes, tuple) and all(isinstance(d, int) for d in shapes):
        return (new, *shapes[1:]) if shapes and shapes[0] == batch else shapes
    if isinstance(shapes, tuple):
        return tuple(_batched(s, batch, new) for s in shapes)
    return shapes


def _leaves(out: object) -> list[torch.Tensor]:
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in _leaves(o)]
    return [out] if isinstance(out, torch.Tensor) else []


def _split(out: object, split: int) -> list[object]:
    """A batched output as one output per probe (the first ``split`` samples, the rest)."""
    return [[leaf[:split] for leaf in _leaves(out)], [leaf[split:] for leaf in _leaves(out)]]


def _forward(model: nn.Module, probe: Probe, heads: Mapping[str, Head], *, select: bool) -> _Run:
    """Run ``probe`` through ``model``, capturing the heads' inputs (of the channels that stay
    after shrinking where ``select``: the masked model still has the removed ones)."""
    run = _Run()
    seen: dict[str, torch.Tensor] = {}

    def capture(name: str, head: Head):
        def hook(_: nn.Module, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                value = args[0].detach()
                if select and head.kept is not None:
                    value = value.index_select(head.dim, head.kept.to(value.device))
                seen[name] = value

        return hook

    handles = [
        model.get_submodule(name).register_forward_pre_hook(capture(name, head))
        for name, head in heads.items()
    ]
    try:
        for x in probe.inputs:
            seen.clear()
            out = model(x)
            run.shapes.append(_shapes(out))
            if probe.split:
                run.outputs += _split(out, probe.split)
                for name, value in seen.items():
                    run.features.setdefault(name, []).extend(_split(value, probe.split))
            else:
                run.outputs.append(_leaves(out))
                for name, value in seen.items():
                    run.features.setdefault(name, []).append([value])
    finally:
        for handle in handles:
            handle.remove()
    return run


def probe_and_reference(
    masked: nn.Module,
    example_input: torch.Tensor,
    outputs: object,
    heads: Mapping[str, Head],
) -> tuple[Probe, _Run]:
    """The check's probe and the masked model's results on it (eval mode). The probe is the
    smaller input (:func:`_smaller`) with a variant of it, as one batch, when the model's
    output for that batch has the shape it has per sample of ``example_input``; otherwise
    ``example_input`` and its variant, batched if the output is per sample, else one by one."""
    batch = len(example_input) if example_input.ndim else 0
    # a model that needs more than CHECK_SIDE (Inception v3: 75 px) tries twice that before
    # its full input, which costs ~5x the pixels at 299 px
    sides = (_smaller(example_input), _smaller(example_input, 2 * CHECK_SIDE), example_input)
    candidates = [c for c in sides if c is not None]
    candidates = [
        c for i, c in enumerate(candidates) if c.shape not in {p.shape for p in candidates[:i]}
    ]
    for base in candidates:
        both = torch.cat([base, _variant(base)]) if base.ndim else None
        if both is None:
            break
        probe = Probe((both,), len(base))
        try:
            run = _forward(masked, probe, heads, select=True)
        except Exception:  # a model that refuses the crop (or a batch) tries the next probe
            continue
        if run.shapes[0] == _batched(outputs, batch, len(both)):
            return probe, run
    probe = Probe((example_input, _variant(example_input)), 0)
    return probe, _forward(masked, probe, heads, select=True)


def _compare_pair(
    what: str, reference: list, result: list, rtol: float
) -> tuple[float, float, bool]:
    """(largest difference / scale, scale, checked) of one compared tensor over the probes."""
    scale, diff, spread = 0.0, 0.0, 0.0
    for ref, got in zip(reference, result, strict=True):
        if ref.shape != got.shape:
            raise ValueError(
                f"the shrunk model's {what} has shape {tuple(got.shape)}, the masked model's "
                f"{tuple(ref.shape)}: channels it depends on were removed"
            )
        ref, got = ref.float(), got.float()
        if not (bool(torch.isfinite(ref).all()) and bool(torch.isfinite(got).all())):
            return 0.0, 0.0, False
        scale = max(scale, float(ref.abs().max()) if ref.numel() else 0.0)
        diff = max(diff, float((ref - got).abs().max()) if ref.numel() else 0.0)
    if len(reference) > 1 and reference[0].shape == reference[1].shape:
        spread = float((reference[0].float() - reference[1].float()).abs().max())
    relative = diff / scale if scale else diff
    return relative, scale, bool(scale) and spread >= 10 * rtol * scale


def compare(reference: _Run, result: _Run, *, mode: str) -> None:
    """Raise unless the shrunk model's results equal the masked model's relative to their
    scale, and unless at least one compared tensor depends on the input enough to tell."""
    pairs = [
        (f"output {i}", [out[i] for out in reference.outputs], [out[i] for out in result.outputs])
        for i in range(len(reference.outputs[0]))
    ]
    pairs += [
        (f"input of {name}", [v[0] for v in values], [v[0] for v in result.features[name]])
        for name, values in reference.features.items()
        if name in result.features
    ]
    checked = []
    rtol = RTOL if mode == "eval" else RTOL_TRAIN
    for what, ref, got in pairs:
        relative, scale, informative = _compare_pair(what, ref, got, rtol)
        if relative > rtol:
            raise ValueError(
                f"the shrunk model's {what} ({mode} mode) differs from the masked model's by "
                f"up to {relative * scale:.3g} (values up to {scale:.3g}): the removed "
                "channels are not what the masks zero. Use the masked model "
                "(prunelab.apply) instead"
            )
        if informative:
            checked.append(what)
    if not checked:
        raise ShrinkError(
            f"shrink cannot check the shrunk model ({mode} mode): its outputs and the inputs "
            "of its output layers do not depend on the input (constant, zero or not finite, "
            f"e.g. a model with random weights), so a difference would go unseen. Check with "
            "trained weights, or pass check=False to shrink without the check"
        )
