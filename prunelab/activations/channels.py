"""Streaming per-channel statistics of activations: what :func:`activation_stats` adds up.

:class:`ChannelStats` takes one batch of a layer's activations at a time (every value, or the
even sample :mod:`.sampling` picks), stages copies and reduces them in numpy: min, max, sum,
sum of squares, nonzeros and a fixed-bin histogram per channel. :func:`_results` finishes
several layers at once into :class:`~prunelab.activations.results.LayerStats`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from .results import LayerStats
from .sampling import SAMPLE, _check_sample, _lattice, _sampled

__all__ = ["BINS", "ChannelStats"]

BINS = 64
"""Equal histogram bins per channel, by default."""
_PAD = 0.05  # the first batch's range is widened by this share of its span on each side
_STAGED = 1 << 16  # sampled values of a layer gathered before they are reduced
_PLANS = 8  # batch shapes whose reading plan an accumulator keeps


def _check_bins(bins: object) -> int | torch.Tensor:
    if isinstance(bins, bool):
        raise TypeError(f"bins must be an int or a sequence of edges, got {bins!r}")
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        return bins
    try:
        edges = torch.as_tensor(bins, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"bins must be an int (number of bins) or a sequence of increasing edges, got {bins!r}"
        ) from exc
    if edges.numel() < 2 or not torch.isfinite(edges).all() or not (edges.diff() > 0).all():
        raise ValueError(
            f"bin edges must be at least two finite, strictly increasing numbers, got {bins!r}"
        )
    return edges


def _first_range(low: float, high: float) -> tuple[float, float]:
    """The histogram range fixed from the first batch: its span widened a little on each side
    (not below an exact zero bound, the floor of a ReLU)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"activations hold non-finite values (range {low} to {high})")
    if low == high:
        return low - 0.5, high + 0.5
    pad = (high - low) * _PAD
    return (low if low == 0 else low - pad), (high if high == 0 else high + pad)


def _equal_range(edges: list[float]) -> tuple[float, float] | None:
    """The first and last edge, when the edges are equally spaced (else None)."""
    lo, hi, bins = edges[0], edges[-1], len(edges) - 1
    step = (hi - lo) / bins
    if any(abs(edge - (lo + i * step)) > 1e-9 * step for i, edge in enumerate(edges)):
        return None
    return lo, hi


def _affine(bins: int, lo: float, hi: float) -> tuple[float, float]:
    """Scale and shift mapping a value to 1 + its position among ``bins`` equal bins."""
    return bins / (hi - lo), 1 - lo * bins / (hi - lo)


class ChannelStats:
    """Streaming per-channel statistics of activations: count, mean, std, min, max, zero
    fraction and a fixed-bin histogram, from an even sample of each batch.

    **What is read.** Each batch contributes at most ``sample`` values per channel (default
    :data:`SAMPLE`): as many inputs as possible (every k-th of the batch), and on each input
    positions spread evenly over its map, other positions for each input and each batch.
    Every statistic, min, max and the dead-channel flag included, describes these sampled
    values; ``sample=None`` reads every value and makes them all exact. Batches with at most
    ``sample`` values per channel (a Linear layer on at most ``sample`` inputs) are read whole.

    Why a sample: on a CPU, reading every value of an activation once already costs about a
    tenth of the forward pass that made it, and between two layers of a forward pass each
    call into torch costs as much as the arithmetic on a small layer. A batch therefore
    costs one copy of its sample (one numpy ``take`` on a CPU, where numpy's calls cost a
    fraction of torch's); the copies are reduced in numpy when the stage is full or at the
    end, where all layers holding as many values are reduced together.

    **Histogram.** ``bins`` equal bins over the range of the first batch's sample (widened by
    5% on each side that is not exactly zero), or the given edges. Values outside the range
    land in the edge bins and are counted (``clamped``); a NaN counts as below the range. A
    value ``v`` falls in bin ``i`` when ``edges[i] <= v < edges[i + 1]``; equal bins find the
    bin by float32 arithmetic, so a value within about 1e-5 bin widths of an edge may land in
    the bin next to it.

    Memory is O(channels x bins) for the statistics, plus, while streaming, staged samples
    of at most ``_STAGED`` values (or one batch's sample, if that is more).

    >>> acc = ChannelStats(bins=[0.0, 1.0, 2.0])
    >>> acc.update(torch.tensor([[0.0, 1.5], [0.5, 3.0]]), axis=-1)
    >>> stats = acc.result("x")
    >>> stats.histogram.tolist(), stats.zero_fraction.tolist(), stats.clamped.tolist()
    ([[2, 0], [0, 2]], [0.5, 0.0], [0, 1])
    """

    def __init__(self, *, bins: int | Sequence[float] = BINS, sample: int | None = SAMPLE) -> None:
        checked = _check_bins(bins)
        sample = _check_sample(sample)
        self._bins = checked if isinstance(checked, int) else checked.numel() - 1
        self.edges: torch.Tensor | None = None if isinstance(checked, int) else checked
        self._limit = sample
        self._width = self._bins + 2  # per channel: below the range, the bins, at or above
        self.count = 0  # values per channel in the statistics
        self.seen = 0  # values per channel that went by (``count`` of them were sampled)
        self._batches = 0
        self.sample_shape: tuple[int, ...] | None = None
        self._channels = 0
        self._plans: dict[tuple, tuple[int, ...]] = {}  # (shape, axis) -> how it is read
        self._staged: list = []  # (channels, n) samples: numpy arrays, or tensors off the CPU
        self._filled = 0  # values per channel staged
        self._capacity = 0  # values per channel staged at most before they are reduced
        # equal bins: their range (set by the first batch, unless the edges are given);
        # None for unequal edges, which are searched
        self._range = None if self.edges is None else _equal_range(self.edges.tolist())
        # reduced so far, numpy on the CPU: min, max, (sum, sum of squares, nonzeros), counts
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None
        self._moments: np.ndarray | None = None
        self.counts: np.ndarray | None = None

    def update(self, activation: torch.Tensor, *, axis: int) -> None:
        """Add one batch of activations whose channels lie along ``axis``."""
        values = _readable(activation)
        plan = self._plans.get((values.shape, axis))
        if plan is None:
            plan = self._plan(values.shape, axis)
        before, channels, after, rows, _, per_row = plan
        size = rows * per_row
        if self._filled and self._filled + size > self._capacity:
            self._flush()
        # the sample is always a copy: a later layer may change this output in place (an
        # inplace ReLU after a conv)
        if size == before * after:  # every value
            sample = _channels_first(values, before, channels, after)
        else:
            sample = _sampled(values, plan, self._batches)
        if self._range is None and self.edges is None:  # the range of the first batch's
            self._range = _first_range(float(sample.min()), float(sample.max()))  # sample
        self._staged.append(sample)
        self._filled += size
        self.count += size
        self.seen += before * after
        self._batches += 1

    def _plan(self, shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
        """How a batch of this shape is read: (before, channels, after) around the channel
        axis, then the rows (inputs) taken, their step and the positions per row."""
        if len(shape) <= 1:  # one value per sample: a single channel
            before, channels, after = math.prod(shape), 1, 1
        else:
            at = axis % len(shape)
            before, channels, after = math.prod(shape[:at]), shape[at], math.prod(shape[at + 1 :])
        rows, step, per_row = _lattice(before, after, self._limit)
        if self.sample_shape is None:
            self.sample_shape = tuple(shape[1:])
            self._channels = channels
            size = rows * per_row
            self._capacity = size if self._limit is None else max(size, _STAGED // channels)
        elif channels != self._channels:
            raise ValueError(
                f"the activations changed from {self._channels} to {channels} "
                "channels between calls; a layer must keep its channel count (is the "
                "module used twice on different shapes?)"
            )
        if len(self._plans) >= _PLANS:  # maps of ever new sizes: keep the latest only
            self._plans.clear()
        plan = self._plans[(tuple(shape), axis)] = (before, channels, after, rows, step, per_row)
        return plan

    def _take_staged(self, out: np.ndarray | None = None) -> np.ndarray:
        """The staged values as one (channels, filled) array on the CPU (written into
        ``out`` when given); nothing is staged after."""
        staged, self._staged, self._filled = self._staged, [], 0
        staged = [s.cpu().numpy() if isinstance(s, torch.Tensor) else s for s in staged]
        if out is None:
            return staged[0] if len(staged) == 1 else np.concatenate(staged, axis=1)
        return np.concatenate(staged, axis=1, out=out)

    def _flush(self) -> None:
        if self._filled:
            _reduce([self], self._take_staged())

    def _add(
        self, low: np.ndarray, high: np.ndarray, moments: np.ndarray, counts: np.ndarray
    ) -> None:
        if self._low is None or self._high is None or self._moments is None:
            self._low, self._high, self._moments = low, high, moments
            self.counts = counts
            return
        np.minimum(self._low, low, out=self._low)
        np.maximum(self._high, high, out=self._high)
        self._moments += moments
        self.counts += counts

    def result(self, layer: str, *, module_type: str = "", axis: int = -1) -> LayerStats:
        """The statistics so far as a :class:`LayerStats` (CPU tensors)."""
        return _results([(self, layer, module_type, axis)])[0]


def _readable(activation: torch.Tensor) -> np.ndarray | torch.Tensor:
    """The activation as floats to sample from: for a CPU tensor a numpy view of it (between
    the layers of a small model a numpy call costs a fraction of a torch call), else a
    tensor."""
    try:
        values = activation.numpy()
    except (RuntimeError, TypeError):  # it needs grad, is not on the CPU, or is bfloat16
        x = activation.detach()
        return x if x.dtype in (torch.float32, torch.float64) else x.float()
    return values if values.dtype.kind == "f" and values.itemsize >= 4 else values.astype("f4")


def _channels_first(
    values: np.ndarray | torch.Tensor, before: int, channels: int, after: int
) -> np.ndarray | torch.Tensor:
    """A (channels, before x after) copy of a (before, channels, after) activation."""
    moved = values.reshape(before, channels, after).swapaxes(0, 1)
    if isinstance(moved, torch.Tensor):
        return moved.clone(memory_format=torch.contiguous_format).view(channels, -1)
    return moved.copy().reshape(channels, -1)


def _reduce(accumulators: Sequence[ChannelStats], values: np.ndarray) -> None:
    """Add staged values (the rows of all ``accumulators``' channels, in order, with the same
    number of values each and the same bins) to their statistics, in one pass each for min,
    max, sum, sum of squares, nonzero count and histogram."""
    sizes = [acc._channels for acc in accumulators]
    width = accumulators[0]._width
    low, high = np.minimum.reduce(values, 1), np.maximum.reduce(values, 1)
    moments = np.empty((3, len(values)))  # sum, sum of squares, nonzeros
    wide = values.astype(np.float64)  # converted once, not by each reduction
    np.add.reduce(wide, 1, out=moments[0])
    np.einsum("ij,ij->i", wide, wide, out=moments[1])
    np.add.reduce(values != 0, 1, dtype=np.float64, out=moments[2])
    # where each row's bins start (int32 unless that could overflow)
    kind = np.int32 if len(values) * width < 2**31 else np.intp
    first = np.arange(0, len(values) * width, width, dtype=kind)[:, None]
    if all(acc._range is not None for acc in accumulators):  # arithmetic instead of a search
        linear = [_affine(acc._bins, *acc._range) for acc in accumulators]
        if len(accumulators) == 1:
            scale, shift = np.float32(linear[0][0]), np.float32(linear[0][1])
        else:
            pairs = np.repeat(np.array(linear, dtype=np.float32), sizes, axis=0)
            scale, shift = pairs[:, :1], pairs[:, 1:]
        position = values * scale
        position += shift
        if np.isnan(low).any():  # fmax makes a NaN 0: counted below the range
            np.fmax(position, 0, out=position)
            np.fmin(position, width - 1, out=position)
        else:
            np.clip(position, 0, width - 1, out=position)
        index = position.astype(kind)  # truncation is floor here: all are >= 0
        index += first
    else:  # one accumulator with unequal edges
        (acc,) = accumulators
        assert acc.edges is not None
        edges = acc.edges.float().numpy()
        index = np.searchsorted(edges, values, side="right")
        index[np.isnan(values)] = 0
        index += first
    counts = np.bincount(index.ravel(), minlength=len(values) * width)
    counts = counts.reshape(len(values), width)
    start = 0
    for acc, size in zip(accumulators, sizes, strict=True):
        end = start + size
        acc._add(low[start:end], high[start:end], moments[:, start:end], counts[start:end])
        start = end


def _stage(group: Sequence[ChannelStats]) -> np.ndarray:
    """The staged values of several accumulators as one (their channels, filled) array."""
    if len(group) == 1:
        return group[0]._take_staged()
    if any(isinstance(s, torch.Tensor) for acc in group for s in acc._staged):  # off the CPU
        return np.concatenate([acc._take_staged() for acc in group])
    rows = [acc._channels for acc in group]
    dtype = np.result_type(*(chunk.dtype for acc in group for chunk in acc._staged))
    values = np.empty((sum(rows), group[0]._filled), dtype=dtype)
    start = 0
    for acc, size in zip(group, rows, strict=True):
        acc._take_staged(out=values[start : start + size])
        start += size
    return values


def _results(items: Sequence[tuple[ChannelStats, str, str, int]]) -> list[LayerStats]:
    """:meth:`ChannelStats.result` for several accumulators (layer, module type, axis) at once.

    The values still staged are reduced together for all accumulators that hold as many per
    channel with the same bins, and the statistics of all layers are derived together: a few
    numpy calls in all rather than a few per layer, since on small layers the calls, not the
    arithmetic, are the cost.
    """
    groups: dict[tuple, list[ChannelStats]] = {}
    for accumulator, layer, _, _ in items:
        if accumulator.sample_shape is None:
            raise ValueError(f"no activations were recorded for {layer!r}")
        if accumulator._filled:
            unequal = accumulator._range is None  # searched bins: reduced alone
            key = (accumulator._filled, accumulator._width, unequal)
            if unequal:
                key += (id(accumulator),)
            groups.setdefault(key, []).append(accumulator)
    for group in groups.values():
        _reduce(group, _stage(group))
    accumulators = [item[0] for item in items]
    channels = [acc._channels for acc in accumulators]
    moments = np.concatenate([acc._moments for acc in accumulators], axis=1)
    moments /= np.repeat([acc.count for acc in accumulators], channels)
    mean, square, nonzero = moments
    std = np.sqrt(np.maximum(square - mean * mean, 0))
    low = np.concatenate([acc._low for acc in accumulators])
    high = np.concatenate([acc._high for acc in accumulators])
    floats = np.stack((mean, std, low, high, 1 - nonzero)).astype(np.float32)
    histograms, clamped, edges = _histograms(accumulators)
    results, start = [], 0
    for index, (accumulator, layer, module_type, axis) in enumerate(items):
        end = start + channels[index]
        mean, std, low, high, zeros = (torch.from_numpy(row[start:end]) for row in floats)
        start = end
        results.append(
            LayerStats(
                layer=layer,
                module_type=module_type,
                channel_axis=axis,
                sample_shape=accumulator.sample_shape,
                count=accumulator.seen,
                sampled=accumulator.count,
                mean=mean,
                std=std,
                min=low,
                max=high,
                zero_fraction=zeros,
                histogram=histograms[index],
                edges=edges[index],
                clamped=clamped[index],
            )
        )
    return results


@functools.lru_cache(maxsize=16)
def _unit_edges(bins: int) -> np.ndarray:
    """``bins + 1`` equal edges from 0 to 1 (read-only)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    edges.flags.writeable = False
    return edges


def _histograms(accumulators: Sequence[ChannelStats]) -> tuple[list, list, list]:
    """Per accumulator: its histogram (the edge bins take in what fell outside the range),
    how many values fell outside, and the bin edges (float32); layers with as many bins are
    done together."""
    histograms: list = [None] * len(accumulators)
    clamped, edges = list(histograms), list(histograms)
    by_width: dict[int, list[int]] = {}
    for i, acc in enumerate(accumulators):
        by_width.setdefault(acc._width, []).append(i)
    for width, chosen in by_width.items():
        counts = np.concatenate([accumulators[i].counts for i in chosen])
        histogram = counts[:, 1:-1].copy()
        histogram[:, 0] += counts[:, 0]
        histogram[:, -1] += counts[:, -1]
        outside = counts[:, 0] + counts[:, -1]
        # equal bins: lo, hi (unequal edges get a row too, never used: they keep their edges)
        ranges = np.array([accumulators[i]._range or (0.0, 1.0) for i in chosen])
        grid = ranges[:, :1] + (ranges[:, 1:] - ranges[:, :1]) * _unit_edges(width - 2)
        grid[:, -1] = ranges[:, 1]
        grid = grid.astype(np.float32)
        start = 0
        for row, i in enumerate(chosen):
            acc = accumulators[i]
            end = start + acc._channels
            histograms[i] = torch.from_numpy(histogram[start:end])
            clamped[i] = torch.from_numpy(outside[start:end])
            edges[i] = torch.from_numpy(grid[row]) if acc.edges is None else acc.edges.float()
            start = end
    return histograms, clamped, edges
