"""Importance criteria: pure functions from a weight (and its statistics) to scores.

Higher score = more important = kept longer. Element-wise criteria return a tensor of the
weight's shape; per-channel criteria return one score per channel.
"""

from __future__ import annotations

import zlib

import torch

from .targets import Target

__all__ = [
    "activation_magnitude",
    "channel_norm",
    "magnitude",
    "random_scores",
    "taylor",
]


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """``|w|``.

    >>> magnitude(torch.tensor([-2.0, 1.0])).tolist()
    [2.0, 1.0]
    """
    return weight.detach().abs()


def random_scores(shape: tuple[int, ...], *, seed: int, fqn: str) -> torch.Tensor:
    """Uniform random scores, reproducible from ``seed``.

    Each tensor draws from its own generator seeded by ``seed`` and its name, so a layer's
    scores do not depend on which other layers are pruned alongside it.

    >>> bool((random_scores((3,), seed=0, fqn="a") == random_scores((3,), seed=0, fqn="a")).all())
    True
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(fqn.encode()))
    return torch.rand(shape, generator=generator)


def taylor(weight: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """First-order Taylor estimate of the loss change when a weight is removed: ``|w * g|``."""
    return (weight.detach() * gradient.to(weight.device)).abs()


def activation_magnitude(
    weight: torch.Tensor, input_norm: torch.Tensor, target: Target
) -> torch.Tensor:
    """Wanda-style ``|W_ij| * ||x_j||_2`` with ``j`` the input feature/channel of each weight.

    For grouped convolutions, weight ``[o, j]`` sees input channel ``group(o) * in/groups + j``.
    """
    weight = weight.detach()
    norms = input_norm.to(weight.device, weight.dtype)
    in_dim = target.in_dim
    view = [1] * weight.ndim
    if target.groups > 1 and in_dim == 1:
        out, per_group = weight.shape[0], weight.shape[1]
        group_of_out = torch.arange(out, device=weight.device) // (out // target.groups)
        index = group_of_out[:, None] * per_group + torch.arange(per_group, device=weight.device)
        view[0], view[1] = out, per_group
        return weight.abs() * norms[index].reshape(view)
    view[in_dim] = weight.shape[in_dim]
    return weight.abs() * norms.reshape(view)


def channel_norm(weight: torch.Tensor, *, p: float, dim: int) -> torch.Tensor:
    """Ln norm of each slice along ``dim`` over all other dims (``torch.nn.utils.prune``'s
    ``ln_structured`` criterion).

    >>> channel_norm(torch.tensor([[3.0, -4.0], [1.0, 0.0]]), p=2, dim=0).tolist()
    [5.0, 1.0]
    """
    other = [d for d in range(weight.ndim) if d != dim]
    return torch.linalg.vector_norm(weight.detach(), ord=p, dim=other)
