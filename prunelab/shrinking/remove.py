"""Removing the planned channels: :func:`shrink` zeroes a private copy into the masked model,
has Torch-Pruning take the channels out, and checks the result (:mod:`.check`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..core.apply import copy_model
from ..core.masks import Masks
from ..core.targets import get_parameter
from .check import _check_outputs, _reference
from .graph import _Group
from .plan import ShrinkPlan, _all, _plan

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
            :data:`.check.CHECK_SIDE`, when the model's output for that crop has the shape it has
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
    was removed (:func:`prunelab.analysis.speed_report`) need not trace the model twice.

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
        _check_outputs(reference, result)
    plan = planned.plan
    got = sum(p.numel() for p in work.parameters())
    if got != plan.parameters:
        raise ValueError(
            f"the shrunk model has {got:,} parameters, the masks predicted {plan.parameters:,}; "
            "Torch-Pruning removed tensors prunelab did not expect"
        )
    return work.train(training), plan
