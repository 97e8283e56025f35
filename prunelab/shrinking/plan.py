"""What shrinking removes for a set of channel masks: the plan (:func:`plan_shrink`) and the
masks extended to every coupled tensor (:func:`extend_channel_masks`), worked out from the
coupled groups of :mod:`.graph` before anything is removed."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.apply import copy_model, parameter_owners
from ..core.heads import attention_layers
from ..core.masks import Masks, check_masks
from ..core.targets import CONV_TRANSPOSE, Target, get_parameter, output_layers, targets
from ..errors import ShrinkError
from ..runtime.files import one_line
from .check import Head
from .conv1d import conv1d_tensors, mlp_units, unit_cut
from .graph import (
    _LAYERS,
    _check_input,
    _graph,
    _Group,
    _group_table,
    _groups,
    _handler_kind,
    _shapes,
    grouped,
)
from .heads import head_parameters, head_rows, head_tensors, split_head_masks

__all__ = ["ShrinkPlan", "extend_channel_masks", "plan_shrink"]


@dataclass(frozen=True)
class ShrinkPlan:
    """What :func:`shrink` will do to a model for a set of channel masks.

    Attributes:
        masks: The channel masks extended to every coupled tensor (see the module docstring);
            the masked model with these masks computes what the shrunk model computes.
        removed: ``{module fqn: number of output channels removed}`` for every module that
            loses channels (convolutions, linear layers, BatchNorms); for an attention layer
            that loses heads, the number of q, k and v rows removed.
        parameters: Parameter count of the shrunk model, predicted from the masks.
        dense_parameters: Parameter count of the given model.
        groups: One row per coupled group (see :func:`coupled_groups`) with ``removed``.
    """

    removed: Mapping[str, int]
    parameters: int
    dense_parameters: int
    groups: pd.DataFrame = field(repr=False, compare=False)
    _build_masks: Callable[[], Masks] = field(repr=False, compare=False)

    @cached_property
    def masks(self) -> Masks:
        # built on first use: shrink itself zeroes slices of its copy and never needs them,
        # and for a resnet50 they are ~50 MB of bool tensors to copy and fill
        return self._build_masks()


def _channel_keep(fqn: str, mask: torch.Tensor, out_dim: int, module_type: str) -> torch.Tensor:
    """Per output channel: kept (True) or pruned; raises for masks that are not per channel."""
    # numpy's bool reductions are ~20x faster than torch's on CPU, and masks are CPU tensors
    rows = mask.movedim(out_dim, 0).reshape(mask.shape[out_dim], -1).numpy()
    keep, full = rows.any(axis=1), rows.all(axis=1)
    if not np.array_equal(keep, full):
        mixed = int((keep & ~full).sum())
        raise ValueError(
            f"shrink needs channel masks, but the mask of {fqn} ({module_type}) zeroes scattered "
            f"weights inside {mixed} output channel(s): removing a row or filter from a layer "
            "is only possible when all of its weights are pruned, and unstructured or N:M "
            "zeros never empty one. Prune with a channel strategy (e.g. weight-norm-channel "
            "or activation-norm-channel, granularity 'channel') to shrink the model, or use "
            "prunelab.storage for sparse formats of these masks"
        )
    return torch.from_numpy(keep)


def _all(mask: torch.Tensor) -> bool:
    return bool(mask.numpy().all())


def _masked_channels(
    work: nn.Module, masks: Masks, by_fqn: Mapping[str, Target]
) -> tuple[dict[nn.Module, torch.Tensor], dict[str, dict[int, set[int]]]]:
    """{module: kept output channels} for every masked layer, and the pruned rows as
    {weight fqn: {output dim: indices}}; rejects what shrink cannot do."""
    found = {}
    zero_rows: dict[str, dict[int, set[int]]] = {}
    for fqn, mask in masks.items():
        target = by_fqn.get(fqn)
        if target is None:
            raise ValueError(f"mask for {fqn!r} names no prunable tensor of this model")
        if tuple(mask.shape) != target.shape:
            raise ValueError(
                f"mask for {fqn!r} has shape {tuple(mask.shape)}, the weight {target.shape}"
            )
        module = work.get_submodule(target.module_fqn) if target.module_fqn else work
        if target.param_name != "weight" or not isinstance(module, _LAYERS):
            if _all(mask):
                continue
            raise ValueError(
                f"shrink removes channels of Linear and convolution layers only; {fqn} "
                f"({target.module_type}) is pruned too: leave it out of the masks"
            )
        keep = _channel_keep(fqn, mask, target.out_dim, target.module_type)
        found[module] = keep
        if not bool(keep.all()):
            zero_rows[fqn] = {target.out_dim: set(torch.nonzero(~keep).flatten().tolist())}
    return found, zero_rows


def _group_keep(item: _Group, channels: Mapping[nn.Module, torch.Tensor]) -> torch.Tensor:
    """Union of the kept channels of the group's masked layers, in root coordinates."""
    keep = torch.zeros(item.channels, dtype=torch.bool)
    masked_any = False
    for gi in item.group:
        dep, idxs = gi
        module = dep.target.module
        if _handler_kind(dep) != "out" or not isinstance(module, _LAYERS):
            continue
        local = channels.get(module)
        if local is None:
            return torch.ones(item.channels, dtype=torch.bool)  # an unmasked layer keeps all
        masked_any = True
        roots = torch.as_tensor(list(gi.root_idxs), dtype=torch.long)
        keep[roots] |= local[torch.as_tensor(list(idxs), dtype=torch.long)]
    return keep if masked_any else torch.ones(item.channels, dtype=torch.bool)


def _blocks(module: nn.Module, kind: str) -> tuple[int, bool] | None:
    """How ``module`` constrains which of its channels may go: (block size, by position).

    A grouped convolution keeps its groups: every group must lose the same positions (its
    weight holds one slice of input channels for all groups, and Torch-Pruning takes the
    same input columns from each), so channel ``i`` stands for position ``i % size`` in every
    group. A GroupNorm's statistics are per norm group: only a whole norm group can go (its
    other groups' statistics then do not change), so channel ``i`` stands for block
    ``i // size``. None for modules that take any channels."""
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return module.num_channels // module.num_groups, False
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, False  # one group: all channels or none
    if isinstance(module, _LAYERS) and grouped(module):
        channels = module.out_channels if kind == "out" else module.in_channels
        return channels // module.groups, True
    return None


def _round_to_blocks(item: _Group, keep: torch.Tensor) -> torch.Tensor:
    """``keep`` grown until it removes whole blocks (see :func:`_blocks`) of every coupled
    grouped convolution and GroupNorm: a block any kept channel belongs to stays whole, the
    union rule of the module docstring."""
    changed = True
    while changed:  # keep only grows, so this ends
        changed = False
        for gi in item.group:
            blocks = _blocks(gi.dep.target.module, _handler_kind(gi.dep))
            if blocks is None:
                continue
            size, by_position = blocks
            local = torch.as_tensor(list(gi.idxs), dtype=torch.long)
            roots = torch.as_tensor(list(gi.root_idxs), dtype=torch.long)
            block = local % size if by_position else local // size
            kept_blocks = torch.zeros(int(block.max()) + 1, dtype=torch.bool)
            kept_blocks[block[keep[roots]]] = True
            grown = keep[roots] | kept_blocks[block]
            if not torch.equal(grown, keep[roots]):
                keep[roots] = grown
                changed = True
    return keep


def _local(gi, removed_roots: set[int]) -> list[int]:
    return [i for i, r in zip(gi.idxs, gi.root_idxs, strict=True) if r in removed_roots]


def _extend(
    work: nn.Module, groups: list[_Group]
) -> tuple[dict[str, int], dict[str, dict[int, set[int]]], dict[str, tuple[int, ...]]]:
    """What removing the groups' channels takes out of every coupled tensor: removed counts per
    module; removed indices per parameter and dimension; the shapes of those parameters."""
    names = {m: n for n, m in work.named_modules()}
    removed: dict[str, int] = {}
    cut: dict[str, dict[int, set[int]]] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def zero(fqn: str, tensor: torch.Tensor, dim: int, idxs: list[int]) -> None:
        cut.setdefault(fqn, {}).setdefault(dim, set()).update(idxs)
        shapes[fqn] = tuple(tensor.shape)

    for item in groups:
        if item.keep is None or bool(item.keep.all()):
            continue
        roots = set(torch.nonzero(~item.keep).flatten().tolist())
        for gi in item.group:
            dep = gi.dep
            module = dep.target.module
            if not isinstance(module, nn.Module) or module not in names:
                continue
            idxs = _local(gi, roots)
            if not idxs:
                continue
            prefix = f"{names[module]}." if names[module] else ""
            kind = _handler_kind(dep)
            if isinstance(module, _LAYERS):
                transposed = isinstance(module, CONV_TRANSPOSE)
                if transposed and grouped(module):
                    # Torch-Pruning slices a grouped transposed convolution's weight as if it
                    # had one group
                    raise ShrinkError(
                        f"shrink cannot remove channels of the grouped transposed convolution "
                        f"{names[module]} (groups={module.groups}); leave it and the layers "
                        "feeding it unpruned"
                    )
                if kind == "out":  # depthwise convs come here too: their inputs are their outputs
                    zero(prefix + "weight", module.weight, 1 if transposed else 0, idxs)
                    if module.bias is not None:
                        zero(prefix + "bias", module.bias, 0, idxs)
                    removed[names[module]] = removed.get(names[module], 0) + len(idxs)
                elif grouped(module):  # whole positions of every group (see _blocks)
                    size = module.in_channels // module.groups
                    zero(prefix + "weight", module.weight, 1, sorted({i % size for i in idxs}))
                else:
                    zero(prefix + "weight", module.weight, 0 if transposed else 1, idxs)
                continue
            params = dict(module.named_parameters(recurse=False))
            if not params:
                continue
            for pname, param in params.items():
                if param.ndim != 1:
                    raise ValueError(
                        f"shrink cannot remove channels of {names[module]} "
                        f"({type(module).__name__}): its {pname} is not one value per channel"
                    )
                zero(prefix + pname, param, 0, idxs)
            if kind == "out":
                removed[names[module]] = removed.get(names[module], 0) + len(idxs)
    return removed, cut, shapes


def _extended_masks(
    masks: Masks,
    cut: Mapping[str, Mapping[int, set[int]]],
    shapes: Mapping[str, tuple[int, ...]],
    target_fqns: frozenset[str],
) -> Masks:
    """``masks`` with the ``cut`` slices zeroed too (weights of targets as masks, the other
    tensors as coupled masks)."""
    # masks are never modified after construction, so the extended masks share the given
    # tensors and copy only those that gain zeros
    weights = dict(masks.items())
    coupled = dict(masks.coupled)
    for fqn, dims in cut.items():
        store = weights if fqn in target_fqns else coupled
        mask = store.get(fqn)
        mask = torch.ones(shapes[fqn], dtype=torch.bool) if mask is None else mask.clone()
        for dim, idxs in dims.items():
            mask.index_fill_(dim, torch.tensor(sorted(idxs), dtype=torch.long), False)
        store[fqn] = mask
    return Masks(weights, coupled=coupled)


def _predicted_parameters(work: nn.Module, cut: Mapping[str, Mapping[int, set[int]]]) -> int:
    total = 0
    for name, param in work.named_parameters():
        dims = cut.get(name, {})
        total += math.prod(size - len(dims.get(d, ())) for d, size in enumerate(param.shape))
    return total


@dataclass
class _Planned:
    plan: ShrinkPlan
    graph: object  # the torch_pruning DependencyGraph of the working copy
    groups: list[_Group]
    zeros: dict[str, dict[int, set[int]]]  # {fqn: {dim: indices}} the extended masks zero
    outputs: object  # the shapes of the model's outputs on the example input (_shapes)
    heads: dict[str, Head]  # the output layers whose inputs the check compares
    train_only: bool  # the model has branches that run in training only: check both modes


def _heads(
    work: nn.Module, groups: list[_Group], cut: Mapping[str, Mapping[int, set[int]]], calls
) -> dict[str, Head]:
    """The layers whose outputs are the model's (called once), with the input channels that
    stay: the check compares their inputs (see :mod:`.check`)."""
    names = {m: n for n, m in work.named_modules()}
    heads = {}
    for item in groups:
        if not item.outputs or item.inputs:  # an input-reading layer's input proves nothing
            continue
        for gi in item.group:
            module = gi.dep.target.module
            name = names.get(module)
            if (
                name is None
                or _handler_kind(gi.dep) != "out"
                or not isinstance(module, _LAYERS)
                or getattr(module, "groups", 1) > 1
                or calls.get(name, 1) != 1
            ):
                continue
            weight_dim = 0 if isinstance(module, CONV_TRANSPOSE) else 1
            gone = cut.get(f"{name}.weight" if name else "weight", {}).get(weight_dim, set())
            width = module.weight.shape[weight_dim]
            kept = None
            if gone:
                kept = torch.tensor([i for i in range(width) if i not in gone], dtype=torch.long)
            heads[name] = Head(-1 if isinstance(module, nn.Linear) else 1, kept)
    return heads


def _refuse_reused(work: nn.Module, cut: Mapping[str, object], calls: Mapping[str, int]) -> None:
    """A module called at several places in forward has one weight for all of them; Torch-
    Pruning cuts it for one use and the other breaks (a shape mismatch deep in its forward),
    so refuse before anything is removed."""
    for fqn in cut:
        module = fqn.rpartition(".")[0]
        if calls.get(module, 1) > 1:
            raise ShrinkError(
                f"shrink cannot remove channels of {fqn}: module {module or '(the model)'} "
                f"({type(work.get_submodule(module)).__name__}) is called {calls[module]} times "
                "in one forward pass, and its channels cannot be removed for one call only; "
                "leave it and the layers feeding it unpruned, or use the masked model "
                "(prunelab.apply) instead"
            )


def _refuse_tied(work: nn.Module, cut: Mapping[str, object]) -> None:
    """Torch-Pruning slices each module's weight separately: a tensor several modules share
    (tied weights) cannot lose slices consistently, so refuse before anything is removed."""
    names = {m: n for n, m in work.named_modules()}
    owners = parameter_owners(work)
    for fqn in cut:
        shared = owners.get(id(get_parameter(work, fqn)), [])
        if len(shared) > 1:
            tied = ", ".join(f"{names[m]}.{n}" if names[m] else n for m, n in shared)
            raise ValueError(
                f"shrink cannot remove channels of {fqn}: the tensor is shared by {tied} "
                "(tied weights); leave these layers and the layers feeding them unpruned, or "
                "use the masked model (prunelab.apply) instead"
            )


def _plan(work: nn.Module, masks: Masks, example_input: torch.Tensor) -> _Planned:
    masks = check_masks(masks)
    example_input = _check_input(example_input)
    by_fqn = {t.fqn: t for t in targets(work)}
    channels, zero_rows = _masked_channels(work, masks, by_fqn)
    graph, outputs, calls, train_only = _graph(work, example_input)
    try:
        groups = _groups(graph)
    except (IndexError, KeyError) as exc:  # Torch-Pruning's grouping fails on some graphs
        raise ShrinkError(
            "shrink cannot work out which channels move together in this model: Torch-Pruning's "
            f"dependency graph failed ({type(exc).__name__}: {one_line(exc)}); use the masked "
            "model (prunelab.apply) instead"
        ) from exc
    for item in groups:
        keep = _round_to_blocks(item, _group_keep(item, channels))
        if not bool(keep.any()):
            if item.fixed:
                keep = torch.ones_like(keep)  # output channels stay, as zero rows
            else:
                layers = [n for n in item.layers if n.endswith("(out)")]
                raise ValueError(
                    f"the channel masks prune all {item.channels} output channels of "
                    f"{', '.join(layers)}: a layer needs at least one channel; lower the "
                    "sparsity of these layers (a recipe can set it per layer)"
                )
        item.keep = torch.ones_like(keep) if item.fixed else keep
    removed, cut, shapes = _extend(work, groups)
    _refuse_reused(work, cut, calls)
    _refuse_tied(work, cut)
    target_fqns = frozenset(by_fqn)
    plan = ShrinkPlan(
        removed=removed,
        parameters=_predicted_parameters(work, cut),
        dense_parameters=sum(p.numel() for p in work.parameters()),
        groups=_group_table(groups, work, with_removed=True),
        _build_masks=partial(_extended_masks, masks, cut, shapes, target_fqns),
    )
    # besides the given masks' own (checked: whole rows), the extended masks' zeros are all
    # whole slices too, so the masked model is made by zeroing slices, not full-size masks
    for fqn, dims in cut.items():
        for dim, idxs in dims.items():
            zero_rows.setdefault(fqn, {}).setdefault(dim, set()).update(idxs)
    heads = _heads(work, groups, cut, calls)
    return _Planned(plan, graph, groups, zero_rows, outputs, heads, train_only)


def _plan_heads_only(work: nn.Module, masks: Masks, example_input: torch.Tensor) -> _Planned:
    """The plan when no channel goes (only attention heads, :mod:`.heads`): no dependency
    graph to trace (Torch-Pruning cannot trace some models heads are removed from, such as
    Hugging Face models that return output objects), one forward for the output shapes."""
    example_input = _check_input(example_input)
    with torch.no_grad():
        outputs = _shapes(work.eval()(example_input))
    total = sum(p.numel() for p in work.parameters())
    plan = ShrinkPlan(
        removed={},
        parameters=total,
        dense_parameters=total,
        groups=_group_table([], work, with_removed=True),
        _build_masks=lambda: masks,
    )
    # the output layers' inputs are compared too (see .check): a model whose outputs start at
    # zero (torchvision's ViT) is still checked on what reaches its classifier
    found = output_layers(work)
    heads = {}
    if found.how == "traced":
        for fqn in found.fqns:
            name = fqn.rpartition(".")[0]
            module = work.get_submodule(name)
            if isinstance(module, _LAYERS) and getattr(module, "groups", 1) == 1:
                heads[name] = Head(-1 if isinstance(module, nn.Linear) else 1, None)
    return _Planned(plan, None, [], {}, outputs, heads, train_only=False)


def prunes_nothing(masks: Masks) -> bool:
    """Whether ``masks`` keep every element (targets and coupled tensors)."""
    return all(_all(mask) for mask in masks.all().values())


def _refuse_both(planned: _Planned, heads_kept: Mapping[str, list[int]]) -> None:
    """Heads are removed by position in q/k/v: a layer whose width Torch-Pruning also cuts
    (its embedding channels) would move them, so refuse rather than misplace one."""
    for name in heads_kept:
        if any(fqn.startswith(f"{name}.") for fqn in planned.zeros):
            raise ShrinkError(
                f"shrink cannot remove heads of {name} and channels of its embedding width at "
                "once; prune heads and embedding channels in two steps"
            )


def _with_heads(build: Callable[[], Masks], heads: Masks) -> Masks:
    return _merged(build(), heads)


def _split_conv1d(work: nn.Module, rest: Masks) -> tuple[dict[str, list[int]], Masks, Masks]:
    """The GPT-2 MLP hidden units kept (:mod:`.conv1d`), the masks of Conv1D tensors, and
    the rest of the masks (for Torch-Pruning)."""
    conv1d = conv1d_tensors(work)
    if not conv1d or not any(f in conv1d for f in (*rest, *rest.coupled)):
        return {}, Masks({}), rest
    ours, others = rest.split(set(conv1d))
    return mlp_units(ours, work), ours, others


def _plan_with_heads(
    work: nn.Module, masks: Masks, example_input: torch.Tensor
) -> tuple[_Planned, dict[str, list[int]], dict[str, list[int]], Masks]:
    """:func:`_plan` for masks that may prune attention heads (:mod:`.heads`) and GPT-2 MLP
    units (:mod:`.conv1d`) too: the plan for the rest of the masks, with the heads' and units'
    parameters and masks added; the heads kept per attention layer that loses some; the
    units kept per MLP that loses some; and the masks left for Torch-Pruning."""
    masks = check_masks(masks)
    heads_kept, rest = split_head_masks(work, masks)
    units, conv1d_masks, rest = _split_conv1d(work, rest)
    if not heads_kept and prunes_nothing(conv1d_masks):
        return _plan(work, masks, example_input), {}, {}, masks
    if prunes_nothing(rest):
        planned = _plan_heads_only(work, rest, example_input)
    else:
        planned = _plan(work, rest, example_input)
        _refuse_both(planned, heads_kept)
    head_masks, _ = masks.split(set(head_tensors(work, heads_kept)))
    by_fqn = {t.fqn: t for t in targets(work)}
    cut, shapes, unit_removed = unit_cut(work, units)
    for fqn, mask in conv1d_masks.items():  # other Conv1D channels stay, as zeros
        target = by_fqn[fqn]
        keep = _channel_keep(fqn, mask, target.out_dim, target.module_type)
        if not bool(keep.all()):
            gone = set(torch.nonzero(~keep).flatten().tolist())
            planned.zeros.setdefault(fqn, {}).setdefault(target.out_dim, set()).update(gone)
    for fqn, dims in cut.items():
        for dim, idxs in dims.items():
            planned.zeros.setdefault(fqn, {}).setdefault(dim, set()).update(idxs)
    unit_masks = _extended_masks(conv1d_masks, cut, shapes, frozenset(by_fqn))
    base = planned.plan
    gone = head_parameters(work, heads_kept)
    layers = {layer.fqn: layer for layer in attention_layers(work)}
    rows = [  # one group per attention layer: its heads go as wholes
        {
            "group": len(base.groups) + i,
            "root": name,
            "channels": layers[name].num_heads,
            "layers": f"{name} (heads: q, k, v rows and output columns)",
            "size": 1,
            "removable": True,
            "removed": layers[name].num_heads - len(kept),
        }
        for i, (name, kept) in enumerate(heads_kept.items())
    ]
    rows += [  # and one per GPT-2 MLP: its hidden units
        {
            "group": len(base.groups) + len(rows) + i,
            "root": f"{name}.c_fc",
            "channels": len(kept) + unit_removed[f"{name}.c_fc"],
            "layers": f"{name}.c_fc (out), {name}.c_proj (in)",
            "size": 2,
            "removable": True,
            "removed": unit_removed[f"{name}.c_fc"],
        }
        for i, (name, kept) in enumerate(units.items())
    ]
    planned.plan = dataclasses.replace(
        base,
        groups=(
            pd.DataFrame(rows, columns=base.groups.columns)
            if base.groups.empty
            else pd.concat([base.groups, pd.DataFrame(rows)], ignore_index=True)
        ),
        parameters=base.parameters - sum(gone.values()) - _removed_elements(cut, shapes),
        removed={**base.removed, **head_rows(work, heads_kept), **unit_removed},
        _build_masks=partial(_with_heads, base._build_masks, _merged(head_masks, unit_masks)),
    )
    # the masks to zero besides planned.zeros: their coupled tensors (biases), any pattern
    zero_too = Masks(dict(rest), coupled={**rest.coupled, **conv1d_masks.coupled})
    return planned, heads_kept, units, zero_too


def _merged(first: Masks, second: Masks) -> Masks:
    return Masks({**first, **second}, coupled={**first.coupled, **second.coupled})


def _removed_elements(
    cut: Mapping[str, Mapping[int, set[int]]], shapes: Mapping[str, tuple[int, ...]]
) -> int:
    return sum(
        math.prod(shapes[fqn]) - math.prod(n - len(d.get(i, ())) for i, n in enumerate(shapes[fqn]))
        for fqn, d in cut.items()
    )


def plan_shrink(model: nn.Module, masks: Masks, *, example_input: torch.Tensor) -> ShrinkPlan:
    """Work out what :func:`shrink` removes, without building the smaller model.

    Raises:
        ValueError: For masks that are not channel masks, that would remove every channel
            of a layer, or that name tensors the model does not have.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> keep = torch.tensor([True, False] * 3)[:, None].expand(6, 4).clone()
    >>> plan = plan_shrink(net, Masks({"0.weight": keep}), example_input=torch.randn(1, 4))
    >>> plan.removed, plan.dense_parameters, plan.parameters
    ({'0': 3}, 44, 23)
    """
    return _plan_with_heads(copy_model(model), masks, example_input)[0].plan


def extend_channel_masks(model: nn.Module, masks: Masks, *, example_input: torch.Tensor) -> Masks:
    """Channel masks extended to coupled tensors, so that masked and shrunk models agree.

    See the module docstring for the rules (union over coupled layers; BatchNorm, biases and
    the next layers' input channels follow).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 1, 1))
    >>> keep = torch.tensor([True, False]).reshape(2, 1, 1, 1)
    >>> x = torch.ones(1, 1, 2, 2)
    >>> full = extend_channel_masks(net, Masks({"0.weight": keep}), example_input=x)
    >>> full.coupled["1.bias"].tolist(), full["2.weight"].flatten().tolist()
    ([True, False], [True, False])
    """
    return plan_shrink(model, masks, example_input=example_input).masks
