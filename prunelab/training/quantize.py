"""What k-bit kept weights cost: fake quantization and its evaluation."""

from __future__ import annotations

import torch
from torch import nn

from ..core.apply import bake
from ..core.masks import Masks, check_masks
from ..core.targets import get_parameter
from ..runtime.checks import check_count
from ..runtime.functional import run_device
from .loop import _enforce, _measure

__all__ = ["evaluate_quantized", "fake_quantize"]

BITS = (2, 16)


def fake_quantize(weights: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``weights`` to ``bits``-bit symmetric integers and back (per tensor).

    The scale maps the largest magnitude to ``2**(bits-1) - 1``; zeros stay exactly zero, so
    pruned weights remain pruned. Returns a new tensor of the same dtype.

    >>> fake_quantize(torch.tensor([0.0, 0.2, -0.6, 1.0]), 2).tolist()
    [0.0, 0.0, -1.0, 1.0]
    """
    bits = check_count(bits, what="bits", minimum=BITS[0], maximum=BITS[1])
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise TypeError("weights must be a floating-point tensor")
    levels = 2 ** (int(bits) - 1) - 1
    peak = weights.detach().abs().max() if weights.numel() else weights.new_tensor(0.0)
    if peak == 0:
        return weights.detach().clone()
    scale = peak / levels
    return torch.round(weights.detach() / scale).clamp(-levels, levels) * scale


def evaluate_quantized(
    model: nn.Module,
    data: object,
    *,
    bits: int,
    masks: Masks | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Accuracy and loss with the kept weights of every masked layer fake-quantized.

    With ``masks``, the masked tensors are pruned and then quantized; without, every weight
    of a Linear, Conv or recurrent layer is quantized. Biases and norms stay in float, as in
    usual integer kernels. ``model`` is not modified.

    ``agreement`` is the fraction of samples whose top-1 prediction is the same as with the
    weights left in float (pruned alike). Accuracy alone can hide the rounding: 8 and 4 bits
    may score the same when the few predictions 4 bits changes are as often right as wrong;
    the loss and the agreement still differ.

    >>> net = nn.Sequential(nn.Linear(4, 3)).eval()
    >>> x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    >>> sorted(evaluate_quantized(net, (x, y), bits=8))
    ['accuracy', 'agreement', 'loss', 'samples']
    """
    from ..core.targets import targets

    fake_quantize(torch.zeros(1), bits)  # the same clear error before any copying
    check_masks(masks, optional=True)
    reference = bake(model)
    names = list(masks) if masks is not None else [t.fqn for t in targets(reference)]
    with torch.no_grad():
        if masks is not None:
            masks.write_into(reference)  # SparseGPT's new weights, as evaluate uses them
            _enforce(reference, masks)
        copied = bake(reference)  # the float model, pruned, is the reference for agreement
        for fqn in names:
            param = get_parameter(copied, fqn)
            param.copy_(fake_quantize(param, bits))
    run_on = run_device(copied, device)
    copied.to(run_on).eval()
    reference.to(run_on).eval()
    return _measure(copied, data, run_on, reference=reference)
