"""From channel masks to a physically smaller model, through the Torch-Pruning library.

Zeros alone do not make a model smaller or faster: dense kernels multiply by zero as fast as
by anything else. Removing whole output channels does. :func:`shrink` removes the channels
that channel masks prune, together with everything coupled to them, using Torch-Pruning's
dependency graph (residual adds, BatchNorm, depthwise convolutions, the next layer's input
channels).

Semantics (what "masked" and "shrunk" mean, so that the two agree):

* Layers coupled by the graph (e.g. every conv feeding the same residual add) must keep the
  same channels. A channel of such a *group* is removed only when **every** coupled layer
  with a mask prunes it; a channel that any coupled layer keeps survives everywhere (layers
  that pruned it keep their zero rows). Layers without a mask keep all their channels.
* Removing a channel also removes the coupled BatchNorm (or other per-channel) weight and bias
  entries, the biases, and the following layers' input channels. :func:`extend_channel_masks`
  returns masks that zero exactly those tensors, so the masked model computes what the shrunk
  one does (a removed channel's BatchNorm would otherwise still output its shift beta).
* Groups whose channels are the model's outputs (the classifier), or the model's input
  channels (a depthwise convolution, a norm or a residual add on the input itself), cannot
  lose channels; their pruned rows stay in as zeros.

:func:`shrink` checks that the shrunk model's output equals the masked (extended) model's and
raises with the largest difference if not. It checks on one sample of the example input,
centre-cropped where the model's output allows it (see :func:`shrink`), because two forward
passes at full size were a large part of the time it takes.

>>> import torch
>>> from torch import nn
>>> from prunelab.core.masks import Masks
>>> net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
>>> keep = torch.tensor([True, False, True, False, True, True])
>>> masks = Masks({"0.weight": keep[:, None].expand(6, 4).clone()})
>>> small = shrink(net, masks, example_input=torch.randn(1, 4))
>>> small[0].out_features, small[2].in_features
(4, 4)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from .core.apply import copy_model, parameter_owners
from .core.masks import Masks, check_masks
from .core.targets import Target, get_parameter, targets
from .errors import ShrinkError
from .runtime.files import one_line

__all__ = [
    "ShrinkPlan",
    "coupled_groups",
    "extend_channel_masks",
    "plan_shrink",
    "shrink",
    "shrink_with_plan",
]

_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, *_CONV_T)
RTOL = 1e-4
ATOL = 1e-5
#: The check of :func:`shrink` crops the input's dimensions after the channels to this size.
CHECK_SIDE = 64


@dataclass(frozen=True)
class ShrinkPlan:
    """What :func:`shrink` will do to a model for a set of channel masks.

    Attributes:
        masks: The channel masks extended to every coupled tensor (see the module docstring);
            the masked model with these masks computes what the shrunk model computes.
        removed: ``{module fqn: number of output channels removed}`` for every module that
            loses channels (convolutions, linear layers, BatchNorms).
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


@dataclass
class _Group:
    group: object  # a torch_pruning Group built with every channel of its root
    channels: int
    layers: list[str]
    outputs: bool  # the channels reach the model output (or come from its input): they stay
    keep: torch.Tensor | None = None


def _tp():
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "shrink needs the torch-pruning package (pip install torch-pruning)"
        ) from exc
    return torch_pruning


def _check_input(example_input: object) -> torch.Tensor:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            f"example_input must be one input batch as a tensor, got {type(example_input).__name__}"
        )
    return example_input


def _graph(work: nn.Module, example_input: torch.Tensor):
    """Torch-Pruning's dependency graph of ``work`` (a private copy), traced in eval mode, the
    shapes of the outputs of that trace (see :func:`_shapes`), and how many times each module
    (by name) was called in it."""
    tp = _tp()
    training = work.training
    flags = [p.requires_grad for p in work.parameters()]
    outputs: list = []
    calls: dict[str, int] = {}

    def count(name: str) -> Callable:
        def hook(*_: object) -> None:
            calls[name] = calls.get(name, 0) + 1

        return hook

    hooks = [m.register_forward_hook(count(n)) for n, m in work.named_modules() if n]

    def forward(module: nn.Module, inputs: torch.Tensor) -> object:
        # given a bare tensor, Torch-Pruning first tries module(*inputs), which for a batch of
        # one runs the model on the unbatched sample until a layer refuses it: one call, no
        # wasted partial forward
        if inputs.is_floating_point():  # the trace then shows which ops read the input itself
            inputs = inputs.detach().requires_grad_()
        out = module(inputs)
        outputs.append(_shapes(out))
        return out

    work.eval()
    for param in work.parameters():
        param.requires_grad_(True)  # the graph is traced through autograd
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                work, example_inputs=example_input, forward_fn=forward, verbose=False
            )
    except Exception as exc:
        raise ValueError(
            f"Torch-Pruning could not trace the model ({type(exc).__name__}: {exc}); shrink "
            "needs a model it can run on example_input"
        ) from exc
    finally:
        for handle in hooks:
            handle.remove()
        work.train(training)
        for param, flag in zip(work.parameters(), flags, strict=True):
            param.requires_grad_(flag)
    return graph, outputs[0], calls


def _shapes(out: object) -> object:
    """The shapes in a model output (nested tuples and lists kept), to compare two outputs'
    structure without keeping them."""
    if isinstance(out, (tuple, list)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, Mapping):
        return tuple((key, _shapes(value)) for key, value in out.items())
    return tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__


def _handler_kind(dep) -> str:
    name = dep.handler.__name__
    return "in" if "in_channels" in name else "out"


def _reads_input(node) -> bool:
    """Whether the traced op of ``node`` takes the model input itself (a leaf that is not a
    parameter: :func:`_graph` traces with the input requiring grad)."""
    return any(
        fn is not None and not isinstance(getattr(fn, "variable", None), (nn.Parameter, type(None)))
        for fn, _ in getattr(node.grad_fn, "next_functions", ())
    )


def _groups(graph) -> list[_Group]:
    names = graph._module2name
    found = []
    for group in graph.get_all_groups():
        layers, outputs, inputs = [], True, False
        for dep, _ in group:
            module = dep.target.module
            kind = _handler_kind(dep)
            # Torch-Pruning does not track the model input: channels an op passes through
            # (norms, adds, depthwise convolutions) or a layer's input channels, read straight
            # from it, cannot be removed
            grouped = getattr(module, "groups", 1) > 1
            passes = kind == "in" or not isinstance(module, _LAYERS) or grouped
            inputs = inputs or (passes and _reads_input(dep.target))
            if isinstance(module, nn.Module) and module in names:
                layers.append(f"{names[module]} ({kind})")
                if kind == "in" and isinstance(module, _LAYERS):
                    outputs = False  # another layer reads these channels
        found.append(_Group(group, len(group[0].idxs), layers, outputs or inputs))
    return found


def coupled_groups(model: nn.Module, example_input: torch.Tensor) -> pd.DataFrame:
    """Which layers must lose the same channels: one row per dependency group.

    Args:
        model: The model; not modified (the graph is traced on a copy).
        example_input: One input batch to trace the model with.

    Returns:
        A DataFrame with ``group`` (number), ``root`` (the layer the group is named after),
        ``channels``, ``layers`` (module names, ``(out)`` where output channels go and
        ``(in)`` where input channels go), ``size`` (number of modules) and ``removable``
        (False where the channels are the model's outputs, or its input's).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> table = coupled_groups(net, torch.randn(1, 3, 8, 8))
    >>> table.loc[table["root"] == "0", "layers"].item()
    '0 (out), 1 (out), 3 (in)'
    """
    example_input = _check_input(example_input)
    work = copy_model(model)
    return _group_table(_groups(_graph(work, example_input)[0]), work, with_removed=False)


def _group_table(groups: list[_Group], work: nn.Module, *, with_removed: bool) -> pd.DataFrame:
    names = {m: n for n, m in work.named_modules()}
    rows = []
    for number, item in enumerate(groups):
        root = item.group[0].dep.target.module
        row = {
            "group": number,
            "root": names.get(root, "?"),
            "channels": item.channels,
            "layers": ", ".join(item.layers),
            "size": len(item.layers),
            "removable": not item.outputs,
        }
        if with_removed:
            kept = item.channels if item.keep is None else int(item.keep.sum())
            row["removed"] = item.channels - kept
        rows.append(row)
    columns = ["group", "root", "channels", "layers", "size", "removable"]
    return pd.DataFrame(rows, columns=columns + (["removed"] if with_removed else []))


# -- planning --------------------------------------------------------------------------------


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
                transposed = isinstance(module, _CONV_T)
                groups_ = getattr(module, "groups", 1)
                if (
                    kind == "out"
                    and groups_ > 1
                    and not module.in_channels == module.out_channels == groups_
                ):
                    # Torch-Pruning drops the rows and keeps `groups`, which then no longer
                    # divides them (or takes groups == out_channels for depthwise)
                    raise ValueError(
                        f"shrink cannot remove output channels of the grouped convolution "
                        f"{names[module]} (groups={groups_}); leave it unpruned"
                    )
                if kind == "out":  # depthwise convs come here too: their inputs are their outputs
                    zero(prefix + "weight", module.weight, 1 if transposed else 0, idxs)
                    if module.bias is not None:
                        zero(prefix + "bias", module.bias, 0, idxs)
                    removed[names[module]] = removed.get(names[module], 0) + len(idxs)
                elif groups_ == 1:
                    zero(prefix + "weight", module.weight, 0 if transposed else 1, idxs)
                else:
                    raise ValueError(
                        f"shrink cannot remove input channels of the grouped convolution "
                        f"{names[module]} (groups={groups_}); leave its producers unpruned"
                    )
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
    graph, outputs, calls = _graph(work, example_input)
    try:
        groups = _groups(graph)
    except (IndexError, KeyError) as exc:  # Torch-Pruning's grouping fails on some graphs
        raise ShrinkError(
            "shrink cannot work out which channels move together in this model: Torch-Pruning's "
            f"dependency graph failed ({type(exc).__name__}: {one_line(exc)}); use the masked "
            "model (prunelab.apply) instead"
        ) from exc
    for item in groups:
        keep = _group_keep(item, channels)
        if not bool(keep.any()):
            if item.outputs:
                keep = torch.ones_like(keep)  # output channels stay, as zero rows
            else:
                layers = [n for n in item.layers if n.endswith("(out)")]
                raise ValueError(
                    f"the channel masks prune all {item.channels} output channels of "
                    f"{', '.join(layers)}: a layer needs at least one channel; lower the "
                    "sparsity of these layers (a recipe can set it per layer)"
                )
        item.keep = torch.ones_like(keep) if item.outputs else keep
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
    return _Planned(plan, graph, groups, zero_rows, outputs)


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
    return _plan(copy_model(model), masks, example_input).plan


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


def _remove(graph, groups: list[_Group]) -> None:
    """Remove each group's pruned channels from the graph's model, through Torch-Pruning."""
    for item in groups:
        if item.keep is None or bool(item.keep.all()):
            continue
        root = item.group[0]
        idxs = torch.nonzero(~item.keep).flatten().tolist()
        graph.get_pruning_group(root.dep.target.module, root.dep.handler, idxs).prune(
            record_history=False
        )


def _zero(work: nn.Module, zeros: Mapping[str, Mapping[int, set[int]]], masks: Masks) -> None:
    """Make ``work`` the masked model (extended masks) in place, slice by slice."""
    for fqn, dims in zeros.items():
        param = get_parameter(work, fqn)
        for dim, idxs in dims.items():
            param.index_fill_(dim, torch.tensor(sorted(idxs), device=param.device), 0)
    for fqn, mask in masks.coupled.items():  # given with the masks: any pattern
        if not _all(mask):
            param = get_parameter(work, fqn)
            param.masked_fill_(~mask.to(param.device), 0)


def shrink(
    model: nn.Module, masks: Masks, *, example_input: torch.Tensor, check: bool = True
) -> nn.Module:
    """A physically smaller copy of ``model`` with the channels that ``masks`` prune removed.

    Built with Torch-Pruning's dependency graph on a copy: ``model`` is not modified. The
    masks are first extended to coupled tensors (:func:`extend_channel_masks`); the returned
    model computes what the masked model computes with those extended masks, which is
    checked by running both (see ``check``).

    Args:
        model: The dense model.
        masks: Channel masks (whole output channels kept or pruned), e.g. from
            ``prunelab.prune(model, "weight-norm-channel", sparsity=0.5)``.
        example_input: One input batch, used to trace the graph and to check the result.
        check: Run the masked and the shrunk model (in eval mode) and raise if their outputs
            differ (default True). The check costs two forward passes, so it runs on the
            smallest input that tests the same thing: the first sample of ``example_input``
            with the dimensions after its channels centre-cropped to at most
            :data:`CHECK_SIDE`, when the model's output for that crop has the shape it has
            for one sample of ``example_input`` (convolutional classifiers with adaptive or
            global pooling, such as torchvision's); otherwise ``example_input`` itself. Which
            channels go where does not depend on the input's size or on the sample, so a
            channel removed or misplaced wrongly changes the output on the crop as on the
            full input; the graph is always traced on ``example_input``. ``check=False``
            skips the check, e.g. to shrink again with masks already checked.

    Returns:
        The smaller model, in the mode (train/eval) of ``model``.

    Raises:
        ValueError: For unstructured masks (scattered zeros cannot remove a row or a column),
            masks that would remove every channel of a layer, or a shrunk model whose output
            differs from the masked model's (with the largest difference).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4, 2))
    >>> keep = (torch.arange(8) < 5).reshape(8, 1, 1, 1).expand(8, 3, 3, 3).clone()
    >>> small = shrink(net, Masks({"0.weight": keep}), example_input=torch.randn(1, 3, 4, 4))
    >>> small[0].out_channels, small[3].in_features
    (5, 20)
    """
    return shrink_with_plan(model, masks, example_input=example_input, check=check)[0]


def shrink_with_plan(
    model: nn.Module, masks: Masks, *, example_input: torch.Tensor, check: bool = True
) -> tuple[nn.Module, ShrinkPlan]:
    """:func:`shrink`, also returning the plan it followed, so that a caller reporting what
    was removed (:func:`prunelab.analysis.speed.speed_report`) need not trace the model twice.

    Returns:
        The smaller model and its :class:`ShrinkPlan`.
    """
    work = copy_model(model)
    planned = _plan(work, masks, example_input)
    training = work.training
    work.eval()
    with torch.no_grad():
        # the zeros go into the private copy in place: it is then the masked model itself
        _zero(work, planned.zeros, masks)
        if check:
            probe, reference = _reference(work, example_input, planned.outputs)
    _remove(planned.graph, planned.groups)
    if check:
        with torch.no_grad():
            result = work(probe)
        diff, scale = _max_difference(reference, result)
        if diff > ATOL + RTOL * scale:
            raise ValueError(
                f"the shrunk model's output differs from the masked model's by up to {diff:.3g} "
                f"(outputs up to {scale:.3g}); Torch-Pruning did not handle this architecture "
                "exactly. Use the masked model (prunelab.apply) instead"
            )
    plan = planned.plan
    got = sum(p.numel() for p in work.parameters())
    if got != plan.parameters:
        raise ValueError(
            f"the shrunk model has {got:,} parameters, the masks predicted {plan.parameters:,}; "
            "Torch-Pruning removed tensors prunelab did not expect"
        )
    return work.train(training), plan
