"""Run a model with some tensors swapped, without touching the model itself."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from ..errors import DeviceError
from .files import bounded_repr

__all__ = [
    "available_devices",
    "check_device",
    "check_materialized",
    "functional_forward",
    "model_device",
    "run_device",
    "structural_copy",
    "tensors_on",
]


def check_materialized(model: nn.Module) -> None:
    """Refuse a model with tensors on the meta device, before anything reads its weights.

    A meta tensor has a shape and a dtype but no values: there is nothing to score, mask or
    run, and torch's own errors about it (``Tensor.item() cannot be called on meta tensors``)
    do not say what to do. Every public entry point that reads weights goes through here
    (:func:`prunelab.core.targets.targets`, :func:`model_device`, ``masked_weights``, ``apply``).

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
    return _first_device(model)


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, then ``cuda:N`` and ``mps`` where present.

    >>> available_devices()[0]
    'cpu'
    """
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, refused unless this machine has it.

    Torch accepts ``torch.device("cuda:7")`` anywhere and fails only at the first tensor moved
    there, with a message about drivers; a name it does not know (``"tpu"``) gives a list of
    twenty backends. Both are checked here, at the boundary, against what exists.

    Raises:
        DeviceError: Naming the device and the ones available here.

    >>> check_device("cpu")
    device(type='cpu')
    """
    here = ", ".join(available_devices())
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(
            f"unknown device {bounded_repr(device, limit=40)}; available here: {here}"
        ) from None
    if parsed.type == "cpu":
        return parsed
    backend = {"cuda": torch.cuda, "mps": torch.backends.mps}.get(parsed.type)
    if backend is None or not backend.is_available():
        raise DeviceError(f"device {str(parsed)!r} is not available here; available: {here}")
    count = torch.cuda.device_count() if parsed.type == "cuda" else 1
    if parsed.index is not None and parsed.index >= count:
        raise DeviceError(
            f"device {str(parsed)!r} does not exist: this machine has {count} {parsed.type} "
            f"device(s); available: {here}"
        )
    return parsed


def run_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Where to run ``model``: ``device`` checked by :func:`check_device`, else where it is."""
    return check_device(device) if device is not None else model_device(model)


def _first_device(model: nn.Module) -> torch.device:
    """:func:`model_device` without the meta check, for per-batch use after an entry point."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def structural_copy(model: nn.Module, memo: dict[int, nn.Module] | None = None) -> nn.Module:
    """A copy of the module structure that shares every tensor with ``model``.

    Each module is copied with its own attribute containers (parameter, buffer, submodule and
    hook dicts), so tensors swapped in by ``functional_call`` and hooks registered on the copy
    never reach ``model``, not even for a moment: another thread may be using ``model`` at the
    same time (the app's sessions share each cached model). The tensors themselves are
    shared, so the copy costs no tensor memory and far less time than ``copy.deepcopy``.

    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> copy = structural_copy(net)
    >>> copy[0] is not net[0], copy[0].weight is net[0].weight
    (True, True)
    """
    memo = {} if memo is None else memo
    if id(model) in memo:  # a module registered twice stays one module
        return memo[id(model)]
    copy = object.__new__(type(model))
    memo[id(model)] = copy
    state = {}
    for key, value in vars(model).items():
        if key == "_modules":
            value = type(value)(
                (name, None if child is None else structural_copy(child, memo))
                for name, child in value.items()
            )
        elif isinstance(value, (dict, list, set)):
            value = value.copy()  # its own container of the same type (OrderedDict too)
        state[key] = value
    copy.__dict__.update(state)
    return copy


def functional_forward(
    model: nn.Module,
    overrides: Mapping[str, torch.Tensor],
    *inputs: torch.Tensor,
    device: torch.device | str | None = None,
    private: bool = False,
) -> object:
    """Call ``model(*inputs)`` with the tensors in ``overrides`` used in place of its own.

    The model is never modified, not even during the call: ``functional_call`` swaps the
    tensors into a :func:`structural_copy`, so threads sharing ``model`` never see each other's
    tensors. ``private=True`` says ``model`` is already such a copy, owned by the caller alone
    (one made once for many batches), so it is used as it is.

    In training mode, buffers that a forward pass updates in place (BatchNorm running
    statistics) are given as copies; with ``device`` set, every parameter and buffer is passed
    as a copy on that device, so the model can stay where it is.
    """
    tensors: dict[str, torch.Tensor] = {}
    # per batch: the entry point that called us has checked the model (model_device)
    if device is not None and torch.device(device) != _first_device(model):
        tensors.update({k: v.to(device) for k, v in model.named_parameters()})
        tensors.update({k: v.to(device) for k, v in model.named_buffers()})
    elif model.training:
        tensors.update({k: v.clone() for k, v in model.named_buffers()})
    if device is not None:
        overrides = {k: v.to(device) for k, v in overrides.items()}
        inputs = tuple(x.to(device) for x in inputs)
    tensors.update(overrides)
    module = model if private else structural_copy(model)
    return functional_call(module, tensors, inputs, strict=False)


def tensors_on(
    model: nn.Module, overrides: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """Tensors to run ``model`` with on ``device``: copies of all of them where the model lives
    elsewhere (made once, not per batch), else just the overrides."""
    if device == model_device(model):
        return overrides
    tensors = {k: v.to(device) for k, v in model.named_parameters()}
    tensors.update({k: v.to(device) for k, v in model.named_buffers()})
    tensors.update({k: v.to(device) for k, v in overrides.items()})
    return tensors
