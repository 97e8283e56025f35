"""Removing the MLP hidden units of Hugging Face GPT-2-style blocks: the part of
:func:`~prunelab.shrinking.shrink` for channel masks on ``Conv1D`` layers.

Torch-Pruning does not know Hugging Face's ``Conv1D`` (``x @ W + b``, its weight stored as
``(in, out)``) and cannot trace models that return output objects, so prunelab slices these
layers itself, as it does attention heads (:mod:`.heads`):

* an MLP with ``c_fc`` and ``c_proj`` Conv1D layers (GPT-2's ``GPT2MLP``) loses the hidden
  units that ``c_fc``'s channel mask prunes: ``c_fc``'s weight columns and bias entries and
  ``c_proj``'s weight rows. The activation between them is elementwise, so a unit whose
  ``c_fc`` output is zero contributes nothing once its ``c_proj`` row is zeroed too, which the
  extended masks do; the model's ``config.n_inner`` follows when every block keeps the same
  number of units (a Hugging Face config holds one width for all blocks);
* every other Conv1D channel mask (attention ``c_attn`` rows inside heads, and the outputs of
  ``c_proj`` layers, which are the residual stream every LayerNorm normalises over) keeps its
  pruned channels as zeros, as LayerNorm'd channels do elsewhere (see :mod:`.plan`).

>>> from prunelab.core.masks import Masks
>>> mlp_units(Masks({}), nn.Linear(2, 2))
{}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..core.masks import Masks
from ..core.targets import get_parameter, is_hf_conv1d

__all__ = ["conv1d_tensors", "mlp_units", "remove_units", "unit_cut"]


def _mlps(model: nn.Module) -> dict[str, nn.Module]:
    """``{fqn: module}`` of modules with Conv1D ``c_fc`` and ``c_proj`` (GPT-2's MLP)."""
    return {
        fqn: m
        for fqn, m in model.named_modules()
        if is_hf_conv1d(getattr(m, "c_fc", None)) and is_hf_conv1d(getattr(m, "c_proj", None))
    }


def _prefix(fqn: str) -> str:
    return f"{fqn}." if fqn else ""


def conv1d_tensors(model: nn.Module) -> set[str]:
    """Parameter fqns of every Conv1D layer of ``model``."""
    return {
        f"{_prefix(fqn)}{name}"
        for fqn, m in model.named_modules()
        if is_hf_conv1d(m)
        for name, _ in m.named_parameters(recurse=False)
    }


def mlp_units(masks: Masks, model: nn.Module) -> dict[str, list[int]]:
    """``{MLP fqn: hidden units kept}`` for the GPT-2 MLPs whose ``c_fc`` mask prunes whole
    units (columns of its weight); raises for a ``c_fc`` mask that is not per unit."""
    found = {}
    for fqn, _ in _mlps(model).items():
        mask = masks.get(f"{_prefix(fqn)}c_fc.weight")
        if mask is None or bool(mask.all()):
            continue
        keep, full = mask.any(dim=0), mask.all(dim=0)
        if not torch.equal(keep, full):
            raise ValueError(
                f"shrink needs channel masks, but the mask of {_prefix(fqn)}c_fc.weight zeroes "
                "scattered weights inside hidden units; prune with a channel strategy "
                "(granularity 'channel') to shrink the model"
            )
        if not bool(keep.any()):
            raise ValueError(
                f"the channel masks prune every hidden unit of {fqn}: an MLP needs at least "
                "one; lower the sparsity of this layer"
            )
        found[fqn] = torch.nonzero(keep).flatten().tolist()
    return found


def unit_cut(
    model: nn.Module, units: Mapping[str, list[int]]
) -> tuple[dict[str, dict[int, set[int]]], dict[str, tuple[int, ...]], dict[str, int]]:
    """What removing the units takes out: ``{fqn: {dim: indices}}``, the tensors' shapes, and
    ``{c_fc fqn: units removed}``."""
    cut: dict[str, dict[int, set[int]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    removed = {}
    for fqn, kept in units.items():
        mlp = model.get_submodule(fqn)
        width = mlp.c_fc.weight.shape[1]
        gone = set(range(width)) - set(kept)
        p = _prefix(fqn)
        for name, dim in (("c_fc.weight", 1), ("c_fc.bias", 0), ("c_proj.weight", 0)):
            cut[p + name] = {dim: gone}
            shapes[p + name] = tuple(get_parameter(model, p + name).shape)
        removed[p + "c_fc"] = len(gone)
    return cut, shapes, removed


def remove_units(work: nn.Module, units: Mapping[str, list[int]]) -> None:
    """Take the pruned hidden units out of ``work``'s GPT-2 MLPs in place, and set
    ``config.n_inner`` where every MLP of the model now has the same width."""
    for fqn, kept in units.items():
        mlp = work.get_submodule(fqn)
        idx = torch.tensor(kept, dtype=torch.long, device=mlp.c_fc.weight.device)
        with torch.no_grad():
            mlp.c_fc.weight = nn.Parameter(mlp.c_fc.weight.index_select(1, idx).clone())
            mlp.c_fc.bias = nn.Parameter(mlp.c_fc.bias.index_select(0, idx).clone())
            mlp.c_proj.weight = nn.Parameter(mlp.c_proj.weight.index_select(0, idx).clone())
        mlp.c_fc.nf = len(kept)
        if hasattr(mlp.c_proj, "nx"):
            mlp.c_proj.nx = len(kept)
    config = getattr(work, "config", None)
    widths = {m.c_fc.weight.shape[1] for m in _mlps(work).values()}
    if units and config is not None and hasattr(config, "n_inner"):
        # one width for all blocks is all a Hugging Face config can say; with several, the
        # model still runs, but from_pretrained would rebuild the original width
        config.n_inner = widths.pop() if len(widths) == 1 else config.n_inner
