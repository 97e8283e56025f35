"""Using masks: a pure masked forward, a pruned copy in plain PyTorch, baked zeros."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..runtime.functional import check_materialized, functional_forward
from .masks import Masks, check_masks
from .targets import get_parameter

__all__ = ["apply", "bake", "copy_model", "masked_forward", "masked_weights"]


def masked_weights(model: nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    """``{fqn: weight * mask}`` for every masked tensor (weights and coupled biases).

    A :class:`~prunelab.core.sparsegpt.Reconstructed` (SparseGPT) brings new weights: those
    are masked instead of the model's own.
    """
    masks = check_masks(masks)
    check_materialized(model)
    out = {}
    new = masks.weights
    for fqn, mask in masks.all().items():
        tensor = get_parameter(model, fqn)
        if fqn in new:
            tensor = new[fqn].to(tensor.device, tensor.dtype)
        if tuple(tensor.shape) != tuple(mask.shape):
            raise ValueError(
                f"mask for {fqn!r} has shape {tuple(mask.shape)}, the tensor {tuple(tensor.shape)}"
            )
        out[fqn] = tensor * mask.to(tensor.device)
    return out


def masked_forward(
    model: nn.Module,
    masks: Masks,
    *inputs: torch.Tensor,
    device: torch.device | str | None = None,
) -> object:
    """Run ``model(*inputs)`` as if the masks were applied, without modifying the model.

    Masked weights are swapped in through ``torch.func.functional_call``, so many mask sets
    can share one model (this is how sweeps and the app evaluate).

    >>> net = nn.Linear(2, 1, bias=False)
    >>> masks = Masks({"weight": torch.tensor([[True, False]])})
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0)
    ...     masked_forward(net, masks, torch.tensor([[2.0, 3.0]])).item()
    2.0
    """
    return functional_forward(model, masked_weights(model, masks), *inputs, device=device)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy that also works on models pruned with ``torch.nn.utils.prune``.

    Their ``weight`` attributes are computed tensors (``weight_orig * weight_mask``), which
    ``copy.deepcopy`` refuses; the copy gets detached values instead, which the pruning hook
    recomputes on the next forward anyway.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                names = [h._tensor_name for h in getattr(hook, "_pruning_methods", [hook])]
                for name in names:
                    value = getattr(module, name)
                    memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def parameter_owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """``{id(parameter): [(module, name), ...]}``: every module that holds each parameter."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((module, name))
    return owners


def apply(model: nn.Module, masks: Masks) -> nn.Module:
    """A pruned copy of ``model`` carrying ``torch.nn.utils.prune`` reparametrisations.

    Each masked tensor ``name`` becomes ``name_orig`` (a parameter) and ``name_mask`` (a
    buffer), so fine-tuning in plain PyTorch keeps the pruned weights at zero. A parameter
    shared by several modules (tied weights) is reparametrised in every one of them, with
    one shared ``name_orig`` and ``name_mask``, so all of them use the masked weight and stay
    tied. ``model`` itself is not modified.

    >>> net = nn.Linear(2, 1)
    >>> pruned = apply(net, Masks({"weight": torch.tensor([[True, False]])}))
    >>> pruned.weight_mask.tolist(), hasattr(net, "weight_mask")
    ([[1.0, 0.0]], False)
    """
    masks = check_masks(masks)
    check_materialized(model)
    pruned = copy_model(model)
    masks.write_into(pruned)  # SparseGPT's new weights go into the copy first
    owners = parameter_owners(pruned)
    for fqn, mask in masks.all().items():
        tensor = get_parameter(pruned, fqn)  # clear error for a mask naming no tensor
        module_fqn, _, name = fqn.rpartition(".")
        first = pruned.get_submodule(module_fqn) if module_fqn else pruned
        mask = mask.to(tensor.device)
        sharing = [(m, n) for m, n in owners.get(id(tensor), []) if m is not first or n != name]
        torch_prune.custom_from_mask(first, name, mask)
        for module, other in sharing:
            # the parameter is still registered here: it becomes this module's *_orig too
            torch_prune.custom_from_mask(module, other, mask)
            module.register_buffer(f"{other}_mask", getattr(first, f"{name}_mask"))
            setattr(module, other, getattr(first, name))
    return pruned


def bake(model: nn.Module) -> nn.Module:
    """A copy of a model from :func:`apply` with the zeros written in and masks removed.

    Modules without pruning reparametrisations are copied as they are; tied weights stay
    tied (one parameter holding the zeros, shared by its modules as before).
    """
    baked = copy_model(model)
    for module in baked.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return baked
