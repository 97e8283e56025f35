"""Hooks held in context managers, and what a hook reads from a module's inputs and outputs.

A forward hook is registered for a ``with`` block and always removed (:func:`forward_hooks`),
so an exception in the forward pass leaves no hook behind. What a hook sees is the first tensor
of a module's inputs or output (:func:`first_tensor`: an LSTM returns a tuple), with its
channels on the axis :func:`channel_axis` names. :class:`ChannelMoments` adds such tensors up
per channel: calibration's activation norms, and anything else that needs per-channel sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "POOLING",
    "ChannelMoments",
    "Hook",
    "PreHook",
    "channel_axis",
    "first_tensor",
    "forward_hooks",
    "replace_first",
]

Hook = Callable[[nn.Module, tuple, object], object]
"""``hook(module, inputs, output)``: a value it returns replaces the output."""
PreHook = Callable[[nn.Module, tuple], object]
"""``pre_hook(module, inputs)``: a value it returns replaces the inputs."""

_WIDE = 1024  # positions after the channel dim beyond which ChannelMoments sums them at once


@contextmanager
def forward_hooks(
    model: nn.Module,
    hooks: Mapping[str, Hook],
    *,
    pre_hooks: Mapping[str, PreHook] | None = None,
) -> Iterator[None]:
    """Register forward hooks on named submodules for the duration of a ``with`` block.

    The hooks are removed when the block ends, also when it ends with an exception.

    Args:
        model: The model whose submodules get hooks.
        hooks: Module fqn -> ``hook(module, inputs, output)``.
        pre_hooks: Module fqn -> ``pre_hook(module, inputs)``, run before the module.

    >>> seen = []
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> with forward_hooks(net, {"0": lambda m, i, o: seen.append(o.shape)}):
    ...     _ = net(torch.zeros(1, 2))
    >>> seen, len(net[0]._forward_hooks)
    ([torch.Size([1, 2])], 0)
    """
    handles = []
    try:
        for name, pre_hook in (pre_hooks or {}).items():
            handles.append(model.get_submodule(name).register_forward_pre_hook(pre_hook))
        for name, hook in hooks.items():
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


POOLING = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)
"""The pooling layers (their channels lie on dim 1)."""
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, *POOLING, nn.modules.batchnorm._NormBase)
_FEATURES_LAST = (nn.Linear, nn.RNNBase, nn.Embedding, nn.LayerNorm)


def channel_axis(module: nn.Module, *, ndim: int | None = None) -> int:
    """Axis holding channels/features of the activations around ``module``.

    Convolutions, pooling and normalisation layers lay out (N, C, ...); Linear and recurrent
    layers keep features last. Any other module (an activation function) follows the layout
    of its tensor: dim 1 when it has ``ndim >= 4`` dimensions (images), else the last.

    >>> channel_axis(nn.Conv2d(1, 2, 3)), channel_axis(nn.ReLU(), ndim=2)
    (1, -1)
    """
    if isinstance(module, _CHANNELS_FIRST):
        return 1
    if isinstance(module, _FEATURES_LAST):
        return -1
    return 1 if ndim is not None and ndim >= 4 else -1


def first_tensor(value: object) -> torch.Tensor | None:
    """The tensor a hook looks at: ``value`` itself, or the first item of a tuple or list
    (a module's positional inputs; an LSTM's ``(output, state)``); None if there is none.

    >>> first_tensor((torch.zeros(2), "state")).shape, first_tensor("text")
    (torch.Size([2]), None)
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def replace_first(value: object, tensor: torch.Tensor) -> object:
    """``value`` with :func:`first_tensor` of it replaced by ``tensor``: what a hook returns
    to change a module's output (or inputs) and keep the rest of a tuple as it was.

    Raises:
        TypeError: For a value that holds no first tensor to replace (a named tuple, a dict).
    """
    if isinstance(value, torch.Tensor):
        return tensor
    if isinstance(value, tuple) and type(value) is tuple:
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    raise TypeError(f"cannot replace the first tensor of a {type(value).__name__}")


def _channel_view(activation: torch.Tensor, axis: int) -> torch.Tensor:
    """The activation as (before, channels, after): a view for contiguous tensors."""
    x = activation.detach() if activation.requires_grad else activation
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if x.ndim <= 1:  # one value per sample: a single channel
        return x.reshape(-1, 1, 1)
    axis %= x.ndim
    return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], -1)


def _per_channel(view: torch.Tensor, reduce: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``reduce`` (sum, amin, amax) of a (before, channels, after) view over all but channels.

    With few positions after the channel dim, reducing dim 0 first is several times faster
    than one reduction over dims (0, 2) on CPU.
    """
    if view.shape[2] <= _WIDE:
        return reduce(reduce(view, 0), 1)
    return reduce(view, (0, 2))


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # mps has no float64


class ChannelMoments:
    """Running per-channel count, sum and sum of squares of a stream of activations.

    Memory is O(channels), whatever the number of batches. Each batch is reduced in float32
    on its own device and added into float64 totals.

    >>> acc = ChannelMoments()
    >>> acc.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), axis=-1)
    >>> acc.norm().tolist(), acc.mean().tolist()
    ([3.1622776985168457, 4.4721360206604], [2.0, 3.0])
    """

    def __init__(self) -> None:
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def update(self, activation: torch.Tensor, *, axis: int) -> None:
        """Add one batch of activations whose channels lie along ``axis``."""
        self._add(_channel_view(activation, axis))

    def _add(self, view: torch.Tensor) -> None:
        total = _per_channel(view, torch.sum)
        squares = _per_channel(view.square(), torch.sum)
        if self.sum is None or self.sumsq is None:
            dtype = _accumulator_dtype(view.device)
            self.sum, self.sumsq = total.to(dtype), squares.to(dtype)
        else:
            if total.shape != self.sum.shape:
                raise ValueError(
                    f"the activations changed from {self.sum.shape[0]} to {total.shape[0]} "
                    "channels between calls; a layer must keep its channel count (is the "
                    "module used twice on different shapes?)"
                )
            self.sum += total  # float32 batch sums into float64 totals
            self.sumsq += squares
        self.count += view.shape[0] * view.shape[2]

    def _require(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sum is None or self.sumsq is None:
            raise ValueError("no activations were recorded (did the data reach this layer?)")
        return self.sum.cpu().double(), self.sumsq.cpu().double()

    def norm(self) -> torch.Tensor:
        """L2 norm of each channel over all positions seen: ``||x_j||_2``."""
        return self._require()[1].sqrt().float()

    def mean(self) -> torch.Tensor:
        """Mean of each channel."""
        return (self._require()[0] / self.count).float()

    def std(self) -> torch.Tensor:
        """Population standard deviation of each channel."""
        total, squares = self._require()
        var = (squares / self.count - (total / self.count).square()).clamp_min(0)
        return var.sqrt().float()
