"""``activation_stats``: per-layer, per-channel statistics of activations, streamed over data.

Hooks on a structural copy of the model (:mod:`.layers`) feed each batch's activations to one
:class:`~prunelab.activations.channels.ChannelStats` per layer; nothing is stored but the
statistics, so memory is O(channels x bins) whatever the data size.

>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
>>> stats = activation_stats(net, torch.randn(64, 4))
>>> list(stats), stats["1"].channels
(['0', '1'], 3)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.apply import masked_weights
from ..core.masks import Masks, check_masks
from ..runtime.batches import iter_batches
from ..runtime.functional import functional_forward, run_device, structural_copy, tensors_on
from ..runtime.hooks import channel_axis, forward_hooks
from .channels import BINS, ChannelStats, _results
from .layers import _observe, _Point, _points
from .results import ActivationStats
from .sampling import SAMPLE

__all__ = ["activation_stats"]


def activation_stats(
    model: nn.Module,
    data: object,
    *,
    layers: str | Sequence[str] | None = None,
    masks: Masks | None = None,
    bins: int | Sequence[float] = BINS,
    sample: int | None = SAMPLE,
    device: torch.device | str | None = None,
) -> ActivationStats:
    """Per-layer, per-channel statistics of activations, streamed over the data.

    Forward hooks (held in a context manager, always removed) update running statistics
    batch by batch; activations are never stored. The hooks sit on a structural copy of the
    model that shares its tensors, so the model itself is not touched, not even for a moment.

    Args:
        model: The model (run in the mode it is in: pass it in eval mode).
        data: Anything :func:`prunelab.runtime.batches.iter_batches` reads (tensors, an
            ``(inputs, labels)`` pair, a Dataset, a DataLoader to choose the batch size).
        layers: Layer names (module fqns for outputs, ``"<fqn>:input"`` for inputs); by
            default :func:`~prunelab.activations.activation_layers`. Layers the data never
            reaches are left out.
        masks: Weight masks to apply first (through ``functional_call``), to compare the
            activations before and after weight pruning.
        bins: Number of equal histogram bins over the range of the first batch, or the
            bin edges (fixed up front). See :class:`~prunelab.activations.ChannelStats`.
        sample: At most how many values per channel each batch adds to the statistics
            (default :data:`SAMPLE`), taken from as many inputs as possible at positions
            spread over each map; every statistic describes these values, min, max and the
            dead-channel flags included. None reads every value: exact, and slower (see
            :mod:`prunelab.activations.sampling` for what each costs).
        device: Where to run (default: where the model is).

    Returns:
        An :class:`~prunelab.activations.ActivationStats` mapping layer name ->
        :class:`~prunelab.activations.LayerStats`.

    Raises:
        ValueError: An unknown layer (the message lists accepted ones), a named layer the
            data never reached, empty data, bad bins or sample.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    >>> relu = activation_stats(net, torch.randn(100, 3), layers=["1"])["1"]
    >>> relu.channels, bool(((relu.zero_fraction > 0) & (relu.zero_fraction < 1)).all())
    (4, True)
    """
    points = _points(model, layers)
    masks = check_masks(masks, optional=True)
    ChannelStats(bins=bins, sample=sample)  # checks both before any forward pass
    shell = structural_copy(model)  # the hooks sit on a private copy
    accumulators = {p.name: ChannelStats(bins=bins, sample=sample) for p in points}
    seen: dict[str, tuple[int, str]] = {}  # layer -> channel axis, module type

    def record(point: _Point, module: nn.Module, tensor: torch.Tensor) -> None:
        known = seen.get(point.name)
        if known is None:  # the layout is the first batch's: later ones only look it up
            axis = channel_axis(module, ndim=tensor.ndim) % max(tensor.ndim, 1)
            known = seen[point.name] = (axis, type(module).__name__)
        accumulators[point.name].update(tensor, axis=known[0])

    run_on = run_device(model, device)
    overrides = masked_weights(model, masks) if masks is not None else {}
    tensors = tensors_on(model, overrides, run_on)  # moved once, not per batch
    hooks, pre_hooks = _observe(shell, points, record)
    samples = 0
    with torch.no_grad(), forward_hooks(shell, hooks, pre_hooks=pre_hooks):
        for batch in iter_batches(data, device=run_on):
            functional_forward(shell, tensors, batch.inputs, private=True)
            samples += batch.inputs.shape[0]
    if samples == 0:
        raise ValueError("data is empty: there are no activations to describe")
    reached = []
    for point in points:
        accumulator = accumulators[point.name]
        if accumulator.count == 0:
            if layers is None:  # a default layer the forward pass skips: left out
                continue
            raise ValueError(
                f"no activations reached {point.name!r}: the forward pass never called "
                f"{point.module!r} (or its {'input' if point.is_input else 'output'} holds "
                "no tensor)"
            )
        axis, module_type = seen[point.name]
        reached.append((accumulator, point.name, module_type, axis))
    result = {stats.layer: stats for stats in _results(reached)}
    return ActivationStats(result, samples=samples, masked=masks is not None)
