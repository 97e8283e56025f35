"""Run a model with some tensors swapped, without touching the model itself."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["check_materialized", "functional_forward", "model_device"]


def check_materialized(model: nn.Module) -> None:
    """Refuse a model with tensors on the meta device, before anything reads its weights.

    A meta tensor has a shape and a dtype but no values: there is nothing to score, mask or
    run, and torch's own errors about it (``Tensor.item() cannot be called on meta tensors``)
    do not say what to do. Every public entry point that reads weights goes through here
    (:func:`prunelab.targets.targets`, :func:`model_device`, ``masked_weights``, ``apply``).

    Raises:
        ValueError: Naming the first meta tensor and how to give the model real weights.
    """
    for kind, named in (("parameter", model.named_parameters), ("buffer", model.named_buffers)):
        for name, tensor in named():
            if tensor.is_meta:
                raise ValueError(
                    f"{kind} {name!r} of {type(model).__name__} is on the meta device: it has "
                    "a shape but no values, so there is nothing to score, mask or run; load "
                    "real weights first (model.to_empty(device='cpu'), then "
                    "model.load_state_dict(...))"
                )


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither).

    Raises:
        ValueError: For a model on the meta device (see :func:`check_materialized`).
    """
    check_materialized(model)
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
