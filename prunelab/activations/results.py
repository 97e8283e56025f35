"""What :func:`~prunelab.activations.activation_stats` returns: per-layer, per-channel results.

:class:`LayerStats` holds one layer's statistics as CPU tensors (one entry per channel) and
derives dead channels, sparsity and approximate quantiles from them; :class:`ActivationStats`
maps layer names to them and tabulates them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

__all__ = ["ActivationStats", "LayerStats"]


@dataclass(frozen=True, eq=False)
class LayerStats:
    """Per-channel statistics of one layer's activations (CPU tensors, one entry per channel).

    Attributes:
        layer: The layer, e.g. ``"conv1"`` (its output) or ``"fc:input"``.
        module_type: Class name of the module, e.g. ``"Conv2d"``.
        channel_axis: Axis of the channels in the activation (with the batch dim).
        sample_shape: Shape of the activation of one sample (without the batch dim).
        count: Values seen per channel (samples x positions).
        sampled: Values per channel that all the statistics below were computed from: all of
            them (``count``) when ``sample=None`` or when no batch had more than ``sample``
            values per channel, else an even sample (see :class:`ChannelStats`).
        mean: Mean per channel.
        std: Population standard deviation per channel.
        min: Smallest value per channel.
        max: Largest value per channel.
        zero_fraction: Fraction of exact zeros per channel: APoZ, the *average percentage of
            zeros*, for rectified activations.
        histogram: ``(channels, bins)`` counts; values outside the edges are counted in the
            edge bins.
        edges: ``bins + 1`` edges, shared by all channels.
        clamped: Per channel, how many binned values fell outside the edges.
    """

    layer: str
    module_type: str
    channel_axis: int
    sample_shape: tuple[int, ...]
    count: int
    sampled: int
    mean: torch.Tensor = field(repr=False)
    std: torch.Tensor = field(repr=False)
    min: torch.Tensor = field(repr=False)
    max: torch.Tensor = field(repr=False)
    zero_fraction: torch.Tensor = field(repr=False)
    histogram: torch.Tensor = field(repr=False)
    edges: torch.Tensor = field(repr=False)
    clamped: torch.Tensor = field(repr=False)

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.mean.shape[0])

    @property
    def dead(self) -> torch.Tensor:
        """Bool per channel: True where the channel was exactly zero at every value described
        (every value seen with ``sample=None``; else every sampled value, so a channel that is
        rarely nonzero can show as dead)."""
        return (self.min == 0) & (self.max == 0)

    @property
    def dead_channels(self) -> list[int]:
        """Indices of the dead channels."""
        return torch.nonzero(self.dead).flatten().tolist()

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros over all channels (activation sparsity)."""
        return float(self.zero_fraction.double().mean())

    def layer_histogram(self) -> torch.Tensor:
        """Counts per bin over all channels."""
        return self.histogram.sum(0)

    def quantiles(self, q: Sequence[float]) -> torch.Tensor:
        """Approximate per-channel quantiles, ``(channels, len(q))``, from the histogram.

        Values are taken as spread evenly within each bin, except the exact zeros, which sit
        at 0 (so the median of a mostly-zero ReLU channel is 0); results are kept within the
        channel's exact min and max. The error is at most about one bin width.

        >>> from prunelab.activations.channels import ChannelStats
        >>> acc = ChannelStats(bins=4)
        >>> acc.update(torch.tensor([[0.0], [0.0], [0.0], [4.0]]), axis=-1)
        >>> acc.result("x").quantiles([0.5, 1.0]).tolist()
        [[0.0, 4.0]]
        """
        levels = torch.as_tensor(q, dtype=torch.float64).flatten()
        if levels.numel() == 0 or not ((levels >= 0) & (levels <= 1)).all():
            raise ValueError(f"quantile levels must lie in [0, 1], got {list(q)!r}")
        counts = self.histogram.double()
        edges = self.edges.double()
        total = counts.sum(1, keepdim=True).clamp_min(1)
        cdf = torch.cat([torch.zeros_like(total), counts.cumsum(1)], dim=1) / total
        knots_x = edges
        zero_bin = int(
            torch.searchsorted(edges, torch.tensor(0.0, dtype=torch.float64), right=True)
        )
        if 1 <= zero_bin <= counts.shape[1] and edges[zero_bin - 1] <= 0 < edges[-1]:
            # put the exact zeros at 0 as a jump, the rest of their bin spread evenly
            b = zero_bin - 1
            lo, hi = float(edges[b]), float(edges[b + 1])
            in_bin = counts[:, b] / total[:, 0]
            zeros = torch.minimum(self.zero_fraction.double(), in_bin)
            below = cdf[:, b] + (in_bin - zeros) * (0 - lo) / (hi - lo)
            points = torch.stack([below, below + zeros], dim=1)
            cdf = torch.cat([cdf[:, : b + 1], points, cdf[:, b + 1 :]], dim=1)
            zero = torch.zeros(2, dtype=torch.float64)
            knots_x = torch.cat([edges[: b + 1], zero, edges[b + 1 :]])
        cdf = torch.cummax(cdf, dim=1).values.contiguous()  # guard rounding
        target = levels.expand(cdf.shape[0], -1).contiguous()
        index = torch.searchsorted(cdf, target).clamp(1, cdf.shape[1] - 1)
        c0, c1 = cdf.gather(1, index - 1), cdf.gather(1, index)
        x0, x1 = knots_x[index - 1], knots_x[index]
        share = torch.where(c1 > c0, (target - c0) / (c1 - c0), torch.zeros_like(target))
        values = x0 + share.clamp(0, 1) * (x1 - x0)
        low, high = self.min.double().unsqueeze(1), self.max.double().unsqueeze(1)
        return torch.minimum(torch.maximum(values, low), high).float()

    def nbytes(self) -> int:
        """Bytes held by the tensors of these statistics."""
        tensors = (self.mean, self.std, self.min, self.max, self.zero_fraction)
        tensors += (self.histogram, self.edges, self.clamped)
        return sum(t.numel() * t.element_size() for t in tensors)


class ActivationStats(Mapping[str, LayerStats]):
    """Statistics of several layers, keyed by layer name (what :func:`activation_stats` returns).

    Attributes:
        samples: Number of inputs the statistics were computed from.
        masked: Whether weight masks were applied.
    """

    def __init__(self, layers: Mapping[str, LayerStats], *, samples: int, masked: bool) -> None:
        self._layers = dict(layers)
        self.samples = samples
        self.masked = masked

    def __getitem__(self, layer: str) -> LayerStats:
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(f"no statistics for {layer!r}; have: {list(self._layers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"ActivationStats({len(self)} layers, {self.samples} samples)"

    def table(self) -> pd.DataFrame:
        """One row per layer: shape, channels, mean, std, min, max, zero fraction, dead channels.

        >>> from torch import nn
        >>> from prunelab.activations import activation_stats
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> activation_stats(net, torch.randn(8, 2)).table()["layer"].tolist()
        ['0', '1']
        """
        rows = []
        for name, stats in self._layers.items():
            mean = float(stats.mean.double().mean())  # channels see equally many values
            second = (stats.std.double().square() + stats.mean.double().square()).mean()
            rows.append(
                {
                    "layer": name,
                    "module_type": stats.module_type,
                    "shape": "x".join(str(s) for s in stats.sample_shape),
                    "channels": stats.channels,
                    "mean": mean,
                    "std": float((second - mean**2).clamp_min(0).sqrt()),
                    "min": float(stats.min.min()),
                    "max": float(stats.max.max()),
                    "zero_fraction": stats.sparsity,
                    "dead_channels": len(stats.dead_channels),
                    "clamped": int(stats.clamped.sum()),
                }
            )
        columns = ["layer", "module_type", "shape", "channels", "mean", "std", "min", "max"]
        columns += ["zero_fraction", "dead_channels", "clamped"]
        return pd.DataFrame(rows, columns=columns)

    def nbytes(self) -> int:
        """Bytes held by all the statistics: O(channels x bins), not O(activations)."""
        return sum(stats.nbytes() for stats in self._layers.values())
