"""Removing the planned channels: :func:`shrink` zeroes a private copy into the masked model,
has Torch-Pruning take the channels out, and checks the result (:mod:`.check`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..core.apply import copy_model
from ..core.masks import Masks
from ..core.targets import get_parameter
from .check import _forward, compare, probe_and_reference
from .conv1d import remove_units
from .graph import _Group, train_mode
from .heads import remove_heads, zero_heads
from .plan import ShrinkPlan, _all, _plan_with_heads

__all__ = ["shrink", "shrink_with_plan"]


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


def _is_gn(module: nn.Module) -> bool:
    return isinstance(module, nn.GroupNorm)


def _train_reference(masked: nn.Module, probe, heads):
    """The masked model's results in train mode, for a model with training-only branches; None
    where the model cannot run the probe in train mode (one sample where batch statistics need
    two), which then is checked in eval mode only."""
    try:
        with train_mode(masked):
            return _forward(masked, probe, heads, select=True)
    except Exception:
        return None


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
        check: Run the masked and the shrunk model and raise if they differ (default True).
            The comparison is relative to each tensor's scale, on two inputs (the example
            input and a variant of it), and covers the outputs and the inputs of the output
            layers; it raises :class:`~prunelab.errors.ShrinkError` rather than pass when
            nothing compared depends on the input (see :mod:`.check`). Models with branches
            that run in training only are compared in train mode too. To cost little, it runs
            on the smallest input that tests the same thing: the first sample of
            ``example_input`` with the dimensions after its channels centre-cropped to at most
            :data:`.check.CHECK_SIDE` (or twice that, for models that need more, such as
            Inception v3), when the model's output for that crop has the shape it
            has per sample of ``example_input`` (convolutional classifiers with adaptive or
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
        ShrinkError: (a ValueError) For a model the check cannot tell anything about (its
            outputs do not depend on the input), and structures shrink cannot remove from.

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
    was removed (:func:`prunelab.analysis.speed_report`) need not trace the model twice.

    Returns:
        The smaller model and its :class:`ShrinkPlan`.
    """
    work = copy_model(model)
    given = masks
    # attention heads go by prunelab's own removal (.heads), the rest through Torch-Pruning
    # and GPT-2's MLP units by .conv1d
    planned, heads_kept, units, masks = _plan_with_heads(work, masks, example_input)
    training = work.training
    work.eval()
    heads = planned.heads
    trained = None
    with torch.no_grad():
        # the zeros go into the private copy in place: it is then the masked model itself
        _zero(work, planned.zeros, masks)
        zero_heads(work, given, heads_kept)
        if check:
            probe, reference = probe_and_reference(work, example_input, planned.outputs, heads)
            if planned.train_only:
                trained = _train_reference(work, probe, heads)
    # Torch-Pruning keeps a GroupNorm's number of groups; whole norm groups go (see .plan)
    norm_groups = {m: m.num_channels // m.num_groups for m in work.modules() if _is_gn(m)}
    _remove(planned.graph, planned.groups)
    remove_heads(work, heads_kept)
    remove_units(work, units)
    for norm, size in norm_groups.items():
        norm.num_groups = norm.num_channels // size
    if check:
        with torch.no_grad():
            compare(reference, _forward(work, probe, heads, select=False), mode="eval")
            if trained is not None:
                with train_mode(work):
                    result = _forward(work, probe, heads, select=False)
                compare(trained, result, mode="train")
    plan = planned.plan
    got = sum(p.numel() for p in work.parameters())
    if got != plan.parameters:
        raise ValueError(
            f"the shrunk model has {got:,} parameters, the masks predicted {plan.parameters:,}; "
            "Torch-Pruning removed tensors prunelab did not expect"
        )
    return work.train(training), plan
