"""Streaming activation statistics through forward hooks that are always removed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["ChannelMoments", "channel_axis", "forward_hooks"]

Hook = Callable[[nn.Module, tuple, object], None]


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Register forward hooks on named submodules for the duration of a ``with`` block.

    The hooks are removed when the block ends, also when it ends with an exception.

    Args:
        model: The model whose submodules get hooks.
        hooks: Module fqn -> ``hook(module, inputs, output)``.

    >>> seen = []
    >>> net = nn.Sequential(nn.Linear(2, 2))
    >>> with forward_hooks(net, {"0": lambda m, i, o: seen.append(o.shape)}):
    ...     _ = net(torch.zeros(1, 2))
    >>> seen, len(net[0]._forward_hooks)
    ([torch.Size([1, 2])], 0)
    """
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def channel_axis(module: nn.Module) -> int:
    """Axis holding channels/features of the activations around ``module``.

    Convolutions lay out (N, C, ...); everything else (Linear, RNN outputs) keeps features last.
    """
    conv = (nn.modules.conv._ConvNd,)
    return 1 if isinstance(module, conv) else -1


class ChannelMoments:
    """Running per-channel count, sum and sum of squares of a stream of activations.

    Memory is O(channels), whatever the number of batches.

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
        flat = activation.detach().movedim(axis, -1).reshape(-1, activation.shape[axis]).double()
        total, squares = flat.sum(0).cpu(), flat.square().sum(0).cpu()
        if self.sum is None:
            self.sum, self.sumsq = total, squares
        else:
            self.sum += total
            self.sumsq += squares
        self.count += flat.shape[0]

    def _require(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sum is None or self.sumsq is None:
            raise ValueError("no activations were recorded (did the data reach this layer?)")
        return self.sum, self.sumsq

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
