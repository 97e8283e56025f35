"""Run a model with some tensors swapped, without touching the model itself."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["functional_forward", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def functional_forward(
    model: nn.Module,
    overrides: Mapping[str, torch.Tensor],
    *inputs: torch.Tensor,
    device: torch.device | str | None = None,
) -> object:
    """Call ``model(*inputs)`` with the tensors in ``overrides`` used in place of its own.

    The model is never modified: in training mode, buffers that a forward pass updates in
    place (BatchNorm running statistics) are given as copies; with ``device`` set, every
    parameter and buffer is passed as a copy on that device, so the model can stay where it is.
    """
    tensors: dict[str, torch.Tensor] = {}
    if device is not None and torch.device(device) != model_device(model):
        tensors.update({k: v.to(device) for k, v in model.named_parameters()})
        tensors.update({k: v.to(device) for k, v in model.named_buffers()})
    elif model.training:
        tensors.update({k: v.clone() for k, v in model.named_buffers()})
    if device is not None:
        overrides = {k: v.to(device) for k, v in overrides.items()}
        inputs = tuple(x.to(device) for x in inputs)
    tensors.update(overrides)
    return functional_call(model, tensors, inputs, strict=False)
