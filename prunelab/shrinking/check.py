"""The output check of :func:`~prunelab.shrinking.shrink`: the shrunk model must compute what
the masked model computes, on the smallest input that tests the same thing."""

from __future__ import annotations

import torch
from torch import nn

from .graph import _shapes

__all__ = ["ATOL", "CHECK_SIDE", "RTOL"]

RTOL = 1e-4
ATOL = 1e-5
#: The check of :func:`shrink` crops the input's dimensions after the channels to this size.
CHECK_SIDE = 64


def _max_difference(reference: object, result: object) -> tuple[float, float]:
    if isinstance(reference, (tuple, list)):
        pairs = [_max_difference(a, b) for a, b in zip(reference, result, strict=True)]
        return max(p[0] for p in pairs), max(p[1] for p in pairs)
    if not isinstance(reference, torch.Tensor):
        return 0.0, 0.0
    if not isinstance(result, torch.Tensor) or reference.shape != result.shape:
        shape = tuple(result.shape) if isinstance(result, torch.Tensor) else type(result).__name__
        raise ValueError(
            f"the shrunk model outputs {shape}, the masked model {tuple(reference.shape)}: "
            "Torch-Pruning removed channels the output depends on"
        )
    diff = (reference.float() - result.float()).abs().max()
    return float(diff), float(reference.float().abs().max())


def _smaller(example_input: torch.Tensor) -> torch.Tensor | None:
    """The first sample of ``example_input``, its dimensions after the channels centre-cropped
    to at most :data:`CHECK_SIDE`; None when that is ``example_input`` itself."""
    if example_input.ndim == 0:
        return None
    small = example_input[:1]
    for dim in range(2, small.ndim):  # (batch, channels, *spatial) for convolutions
        size = small.shape[dim]
        if size > CHECK_SIDE:
            small = small.narrow(dim, (size - CHECK_SIDE) // 2, CHECK_SIDE)
    return None if small.shape == example_input.shape else small


def _one_sample(shapes: object, batch: int) -> object:
    """``shapes`` (from :func:`_shapes`) as they are for one sample of a batch of ``batch``."""
    if isinstance(shapes, tuple) and all(isinstance(d, int) for d in shapes):
        return (1, *shapes[1:]) if shapes and shapes[0] == batch else shapes
    if isinstance(shapes, tuple):
        return tuple(_one_sample(s, batch) for s in shapes)
    return shapes


def _reference(
    masked: nn.Module, example_input: torch.Tensor, outputs: object
) -> tuple[torch.Tensor, object]:
    """(input, masked model's output on it) for the check: the smaller input where the model
    gives the output it gives ``example_input`` (per sample), else ``example_input``."""
    small = _smaller(example_input)
    if small is not None:
        try:
            out = masked(small)
        except Exception:  # a model that refuses the crop is checked on example_input
            out = None
        if out is not None and _shapes(out) == _one_sample(outputs, len(example_input)):
            return small, out
    return example_input, masked(example_input)


def _check_outputs(reference: object, result: object) -> None:
    """Raise unless the shrunk model's output ``result`` equals the masked model's."""
    diff, scale = _max_difference(reference, result)
    if diff > ATOL + RTOL * scale:
        raise ValueError(
            f"the shrunk model's output differs from the masked model's by up to {diff:.3g} "
            f"(outputs up to {scale:.3g}); Torch-Pruning did not handle this architecture "
            "exactly. Use the masked model (prunelab.apply) instead"
        )
