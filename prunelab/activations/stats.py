"""Activations: streaming statistics, thresholding at inference, and the activation sparsifier.

Weight pruning zeroes parameters; activation pruning zeroes values that flow between layers,
which depend on the input. This module looks at those values and prunes them.

**Where activations are observed.** A *layer* here is a module fqn, and names that module's
**output** (the first tensor of it, for modules such as LSTM that return tuples).
``"<fqn>:input"`` names the first positional input entering the module instead. By default
(:func:`activation_layers`) the outputs of the prunable layers (Linear, Conv, ConvTranspose,
LSTM/GRU/RNN), of activation-function modules (ReLU, GELU, ...) and of pooling layers are
observed. Models that apply ``torch.relu`` functionally have no ReLU module: the input of
the next layer (``"fc2:input"``) is where their rectified activations can be seen.

**Channels** lie on dim 1 for convolutions, pooling and normalisation layers, and last for
Linear and recurrent layers; an activation function follows the layout of its input (dim 1
from 4-D on, else last). :func:`channel_axis` decides.

Nothing here modifies a model it was given: statistics and thresholding hook a structural
copy or a full copy, never the model itself.

>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
>>> stats = activation_stats(net, torch.randn(64, 4))
>>> list(stats), stats["1"].channels
(['0', '1'], 3)
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..core.apply import copy_model, masked_weights
from ..core.masks import Masks, check_masks
from ..runtime.batches import iter_batches
from ..runtime.functional import functional_forward, model_device, structural_copy

__all__ = [
    "AGGREGATE_FNS",
    "INPUT_SUFFIX",
    "MASK_FNS",
    "REDUCE_FNS",
    "SAMPLE",
    "ActivationSparsifier",
    "ActivationStats",
    "ChannelMoments",
    "ChannelStats",
    "LayerStats",
    "ThresholdActivation",
    "ThresholdedModel",
    "activation_layers",
    "activation_sparsity_effect",
    "activation_stats",
    "activation_threshold",
    "channel_axis",
    "forward_hooks",
    "sparsity_mask",
    "threshold_mask",
]

Hook = Callable[[nn.Module, tuple, object], object]
PreHook = Callable[[nn.Module, tuple], object]

INPUT_SUFFIX = ":input"
# values per channel that each batch adds to the statistics (see ChannelStats)
SAMPLE = 128
BINS = 64  # equal histogram bins per channel, by default
_GOLDEN = 0.6180339887498949  # fractional parts of multiples spread evenly over [0, 1)
_PLASTIC = 0.7548776662466927
_PAD = 0.05  # the first batch's range is widened by this share of its span on each side
_WIDE = 1024  # positions after the channel dim beyond which ChannelMoments sums them at once
_STAGED = 1 << 16  # sampled values of a layer gathered before they are reduced
_PHASES = 64  # batches after which the sampled positions repeat
_INDICES = 64  # sample indices cached (one per layer shape and phase) ...
_INDEX_CACHED = 1 << 15  # ... of at most this many entries each: 16 MiB in all at most
_PLANS = 8  # batch shapes whose reading plan an accumulator keeps


# ----------------------------------------------------------------------------------------
# Hooks and layer names


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


_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase)
_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.modules.batchnorm._NormBase,
)
_FEATURES_LAST = (nn.Linear, nn.RNNBase, nn.Embedding, nn.LayerNorm)
_POOLS = _CHANNELS_FIRST[1:6]
_NOT_ACTIVATIONS = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d)


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


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == nn.modules.activation.__name__ and not isinstance(
        module, _NOT_ACTIVATIONS
    )


def activation_layers(model: nn.Module, *, inputs: bool = False) -> list[str]:
    """The layers whose activations are observed by default, in model order.

    These are the outputs of prunable layers (Linear, Conv, ConvTranspose, LSTM/GRU/RNN), of
    activation-function modules and of pooling layers. With ``inputs=True`` the input of every
    prunable layer is listed too, as ``"<fqn>:input"``, just before its output.

    >>> activation_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), inputs=True)
    ['0:input', '0', '1']
    """
    names = []
    for fqn, module in model.named_modules():
        if not fqn:
            continue
        if isinstance(module, _PRUNABLE):
            if inputs:
                names.append(fqn + INPUT_SUFFIX)
            names.append(fqn)
        elif isinstance(module, _POOLS) or _is_activation(module):
            names.append(fqn)
    return names


@dataclass(frozen=True)
class _Point:
    name: str
    module: str
    is_input: bool


def _split(name: str) -> tuple[str, bool]:
    if name.endswith(INPUT_SUFFIX):
        return name[: -len(INPUT_SUFFIX)], True
    return name, False


def _unknown_layers(model: nn.Module, bad: list[str]) -> ValueError:
    valid = activation_layers(model, inputs=True) or [n for n, _ in model.named_modules() if n]
    shown = ", ".join(valid[:24]) + (", ..." if len(valid) > 24 else "")
    return ValueError(
        f"unknown layer(s) {bad}: a layer is a module name of the model (its output), or "
        f"'<name>{INPUT_SUFFIX}' for what enters it; accepted, e.g.: {shown}"
    )


def _points(model: nn.Module, layers: str | Sequence[str] | None) -> list[_Point]:
    if layers is None:
        names = activation_layers(model)
        if not names:
            raise ValueError(
                "the model has no Linear, Conv, RNN, activation or pooling module to observe; "
                "name the modules with layers=[...]"
            )
    elif isinstance(layers, str):
        names = [layers]
    else:
        names = list(layers)
        if not names:
            raise ValueError("layers is empty; give at least one module name")
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise TypeError(f"layers must be module names (str), got {wrong[:3]}")
    modules = dict(model.named_modules())
    points, bad = [], []
    for name in dict.fromkeys(names):
        module, is_input = _split(name)
        if not module or module not in modules:
            bad.append(name)
        else:
            points.append(_Point(name, module, is_input))
    if bad:
        raise _unknown_layers(model, bad)
    return points


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _replace_first(value: object, tensor: torch.Tensor) -> object:
    if isinstance(value, torch.Tensor):
        return tensor
    if isinstance(value, tuple) and type(value) is tuple:
        return (tensor, *value[1:])
    if isinstance(value, list):
        return [tensor, *value[1:]]
    raise TypeError(f"cannot replace the first tensor of a {type(value).__name__}")


def _observe(
    model: nn.Module,
    points: Sequence[_Point],
    record: Callable[[_Point, nn.Module, torch.Tensor], torch.Tensor | None],
) -> tuple[dict[str, Hook], dict[str, PreHook]]:
    """Hooks calling ``record(point, module, tensor)`` on each point's tensor; a tensor it
    returns replaces the activation."""
    outputs: dict[str, list[_Point]] = {}
    inputs: dict[str, list[_Point]] = {}
    for point in points:
        (inputs if point.is_input else outputs).setdefault(point.module, []).append(point)

    def record_all(
        chosen: list[_Point], module: nn.Module, tensor: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Record each point in turn; the last replacement (if any) is what flows on."""
        replaced = None
        for point in chosen if tensor is not None else ():
            new = record(point, module, tensor if replaced is None else replaced)
            replaced = new if new is not None else replaced
        return replaced

    def output_hook(chosen: list[_Point]) -> Hook:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            replaced = record_all(chosen, module, _first_tensor(output))
            return None if replaced is None else _replace_first(output, replaced)

        return hook

    def input_hook(chosen: list[_Point]) -> PreHook:
        def hook(module: nn.Module, args: tuple) -> object:
            replaced = record_all(chosen, module, _first_tensor(args))
            return None if replaced is None else (replaced, *args[1:])

        return hook

    return (
        {name: output_hook(chosen) for name, chosen in outputs.items()},
        {name: input_hook(chosen) for name, chosen in inputs.items()},
    )


def _tensors_on(
    model: nn.Module,
    overrides: Mapping[str, torch.Tensor],
    device: torch.device,
    here: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors to run ``model`` (on device ``here``) with on ``device`` (moved once, not per
    batch)."""
    if device == (model_device(model) if here is None else here):
        return dict(overrides)
    tensors = {k: v.to(device) for k, v in model.named_parameters()}
    tensors.update({k: v.to(device) for k, v in model.named_buffers()})
    tensors.update({k: v.to(device) for k, v in overrides.items()})
    return tensors


# ----------------------------------------------------------------------------------------
# Per-channel statistics


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


def _row_positions(
    rows: int, step: int, first: int, per_row: int, stride: int, after: int, phase: int
) -> np.ndarray:
    """(1, rows x per_row) flat indices of the sampled values of channel 0 in a (before,
    channels, after) array with ``stride`` = channels x after: rows ``first``, ``first +
    step``, ... and on each ``per_row`` positions from a low-discrepancy sequence, so each row
    (input) gets other positions, spread evenly over the map whatever its layout (a regular
    stride could line up with the rows of an image and see only one column); ``phase`` (the
    batch number) shifts them."""
    steps = np.arange(rows * per_row, dtype=np.float64)
    spread = (steps * _GOLDEN + phase * _PLASTIC) % 1.0
    positions = np.minimum((spread * after).astype(np.intp), after - 1)
    starts = np.repeat(np.arange(first, first + rows * step, step, dtype=np.intp) * stride, per_row)
    return (starts + positions)[None, :]


@functools.lru_cache(maxsize=_INDICES)
def _sample_indices(
    rows: int, step: int, first: int, per_row: int, channels: int, after: int, phase: int
) -> np.ndarray:
    """(channels, rows x per_row) flat indices of a batch's sample: :func:`_row_positions`
    plus each channel's offset. Read-only, shared by all layers of that shape."""
    index = _row_positions(rows, step, first, per_row, channels * after, after, phase)
    index = index + np.arange(0, channels * after, after, dtype=np.intp)[:, None]
    index.flags.writeable = False
    return index


def _sample_index(
    rows: int, step: int, first: int, per_row: int, channels: int, after: int, phase: int
) -> np.ndarray:
    """:func:`_sample_indices`, cached when small (a lookup costs a fraction of building it)."""
    small = channels * rows * per_row <= _INDEX_CACHED
    build = _sample_indices if small else _sample_indices.__wrapped__
    return build(rows, step, first, per_row, channels, after, phase)


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


def _lattice(before: int, after: int, limit: int | None) -> tuple[int, int, int]:
    """Rows (inputs) taken, their step, and positions per row, for at most ``limit`` values
    per channel from a (before, channels, after) batch: as many inputs as possible first.

    Rounding down keeps layers in step: a batch of ``n`` inputs, ``limit / 2 < n <= limit``,
    gives ``n`` values per channel both on a sampled map and on a Linear output read whole,
    so the layers of a small model hold as many values and are reduced together."""
    if limit is None or before * after <= limit:
        return before, 1, after
    rows = min(before, limit)
    return rows, before // rows, min(after, limit // rows)


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
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
            raise TypeError(f"sample must be a number of values or None, got {sample!r}")
        if sample is not None and sample < 1:
            raise ValueError(f"sample must be at least 1 (or None for every value), got {sample}")
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
        before, channels, after, rows, step, per_row = plan
        size = rows * per_row
        if self._filled and self._filled + size > self._capacity:
            self._flush()
        # the sample is always a copy: a later layer may change this output in place (an
        # inplace ReLU after a conv)
        if size == before * after:  # every value
            sample = _channels_first(values, before, channels, after)
        else:
            batch = self._batches
            index = _sample_index(
                rows, step, batch % step, per_row, channels, after, batch % _PHASES
            )
            if isinstance(values, torch.Tensor):
                sample = values.take(torch.tensor(index, device=values.device))
            else:
                sample = values.take(index)
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


def _stream(
    model: nn.Module,
    data: object,
    layers: str | Sequence[str] | None,
    masks: Masks | None,
    bins: int | Sequence[float],
    sample: int | None,
    device: torch.device | str | None,
) -> tuple[list[tuple[ChannelStats, str, str, int]], int]:
    """The streaming half of :func:`activation_stats`, with its arguments: the accumulators
    of the layers reached, each with (layer, module type, channel axis), and the number of
    samples. Their results are not derived yet (values may still be staged)."""
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

    here = model_device(model)
    run_on = torch.device(device) if device is not None else here
    overrides = masked_weights(model, masks) if masks is not None else {}
    tensors = _tensors_on(model, overrides, run_on, here)
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
            if layers is None:
                continue
            raise ValueError(
                f"no activations reached {point.name!r}: the forward pass never called "
                f"{point.module!r} (or its {'input' if point.is_input else 'output'} holds "
                "no tensor)"
            )
        axis, module_type = seen[point.name]
        reached.append((accumulator, point.name, module_type, axis))
    return reached, samples


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
            default :func:`activation_layers`. Layers the data never reaches are left out.
        masks: Weight masks to apply first (through ``functional_call``), to compare the
            activations before and after weight pruning.
        bins: Number of equal histogram bins over the range of the first batch, or the
            bin edges (fixed up front). See :class:`ChannelStats`.
        sample: At most how many values per channel each batch adds to the statistics
            (default :data:`SAMPLE`), taken from as many inputs as possible at positions
            spread over each map; every statistic describes these values, min, max and the
            dead-channel flags included. None reads every value: exact, and slower (reading
            every value once costs about a tenth of a forward pass on a CPU).
        device: Where to run (default: where the model is).

    Returns:
        An :class:`ActivationStats` mapping layer name -> :class:`LayerStats`.

    Raises:
        ValueError: An unknown layer (the message lists accepted ones), a named layer the
            data never reached, empty data, bad bins or sample.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    >>> relu = activation_stats(net, torch.randn(100, 3), layers=["1"])["1"]
    >>> relu.channels, bool(((relu.zero_fraction > 0) & (relu.zero_fraction < 1)).all())
    (4, True)
    """
    reached, samples = _stream(model, data, layers, masks, bins, sample, device)
    result = {stats.layer: stats for stats in _results(reached)}
    return ActivationStats(result, samples=samples, masked=masks is not None)


# ----------------------------------------------------------------------------------------
# Thresholding activations at inference


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number >= 0, got {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return value


def _zero_below(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    return tensor.masked_fill(tensor.abs() < threshold, 0)


class ThresholdActivation(nn.Module):
    """Wraps a module and zeroes the values of its output with ``|value| < threshold``.

    For exporting a model with activation thresholding built in. For a module returning a
    tuple (LSTM), the first tensor is thresholded. Note that wrapping moves the module's
    parameters one level down (``fc.weight`` becomes ``fc.module.weight``).

    Args:
        module: The module whose output is thresholded.
        threshold: Values with a smaller magnitude become 0.

    >>> net = nn.Sequential(nn.Identity())
    >>> net[0] = ThresholdActivation(net[0], threshold=0.5)
    >>> net(torch.tensor([0.2, -0.7, 0.5])).tolist()
    [0.0, -0.699999988079071, 0.5]
    """

    def __init__(self, module: nn.Module, *, threshold: float) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.threshold = _check_threshold(threshold)

    def forward(self, *args: object, **kwargs: object) -> object:
        output = self.module(*args, **kwargs)
        tensor = _first_tensor(output)
        if tensor is None:
            return output
        return _replace_first(output, _zero_below(tensor, self.threshold))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}"


class ThresholdedModel:
    """What :func:`activation_threshold` yields: a thresholded copy and the sparsity it made.

    Attributes:
        model: A copy of the model whose named activations are thresholded while the block
            lasts (run your forward passes through it).
        threshold: The threshold.
        layers: The thresholded layers.
    """

    def __init__(self, model: nn.Module, threshold: float, layers: tuple[str, ...]) -> None:
        self.model = model
        self.threshold = threshold
        self.layers = layers
        self._zeros = dict.fromkeys(layers, 0)
        self._natural = dict.fromkeys(layers, 0)
        self._total = dict.fromkeys(layers, 0)

    def _record(self, layer: str, before: torch.Tensor, after: torch.Tensor) -> None:
        self._natural[layer] += int((before == 0).sum())
        self._zeros[layer] += int((after == 0).sum())
        self._total[layer] += after.numel()

    def _fraction(self, counts: Mapping[str, int], layer: str | None) -> float:
        names = self.layers if layer is None else (layer,)
        unknown = [n for n in names if n not in counts]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not thresholded here; layers: {list(self.layers)}")
        total = sum(self._total[n] for n in names)
        if total == 0:
            raise ValueError("no activation has passed yet: run data through .model first")
        return sum(counts[n] for n in names) / total

    def sparsity(self, layer: str | None = None) -> float:
        """Fraction of exact zeros after thresholding (all thresholded layers, or one)."""
        return self._fraction(self._zeros, layer)

    def natural_sparsity(self, layer: str | None = None) -> float:
        """Fraction of values that were exactly zero already, before thresholding."""
        return self._fraction(self._natural, layer)

    def per_layer(self) -> pd.DataFrame:
        """One row per layer: values seen, natural sparsity and sparsity after thresholding."""
        rows = [
            {
                "layer": n,
                "values": self._total[n],
                "natural_sparsity": self._natural[n] / self._total[n] if self._total[n] else 0.0,
                "sparsity": self._zeros[n] / self._total[n] if self._total[n] else 0.0,
            }
            for n in self.layers
        ]
        return pd.DataFrame(rows, columns=["layer", "values", "natural_sparsity", "sparsity"])


@contextmanager
def activation_threshold(
    model: nn.Module, layers: str | Sequence[str], threshold: float
) -> Iterator[ThresholdedModel]:
    """Zero activations with ``|value| < threshold`` in the named layers, for a ``with`` block.

    The thresholding runs on a *copy* of ``model`` (hooks on the copy, removed when the block
    ends, also on an exception); ``model`` is not touched, so a model shared by others stays
    as it was. The yielded :class:`ThresholdedModel` holds the copy as ``.model`` and counts
    the activation sparsity achieved by the forward passes run through it. For a lasting,
    exportable model, wrap modules in :class:`ThresholdActivation` instead.

    Args:
        model: The model.
        layers: Layer names (module outputs, or ``"<fqn>:input"`` for what enters a module).
        threshold: Values with a smaller magnitude become 0 (0 changes nothing).

    >>> net = nn.Sequential(nn.Identity())
    >>> with activation_threshold(net, ["0"], 2.5) as run:
    ...     out = run.model(torch.arange(10.0))
    >>> out.tolist()[:4], run.sparsity()
    ([0.0, 0.0, 0.0, 3.0], 0.3)
    """
    threshold = _check_threshold(threshold)
    if layers is None:
        raise ValueError("name the layers to threshold, e.g. activation_layers(model)")
    points = _points(model, layers)
    copied = copy_model(model)
    run = ThresholdedModel(copied, threshold, tuple(p.name for p in points))

    def record(point: _Point, module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
        new = _zero_below(tensor, threshold)
        run._record(point.name, tensor.detach(), new.detach())
        return new

    hooks, pre_hooks = _observe(copied, points, record)
    with forward_hooks(copied, hooks, pre_hooks=pre_hooks):
        yield run


def _scores(output: object) -> torch.Tensor:
    tensor = _first_tensor(output)
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        tensor = output["logits"]
    if tensor is None or tensor.ndim != 2:
        shape = tuple(tensor.shape) if tensor is not None else type(output).__name__
        raise ValueError(f"expected class scores of shape (batch, classes), got {shape}")
    return tensor.float()


def activation_sparsity_effect(
    model: nn.Module,
    data: object,
    layers: str | Sequence[str],
    threshold: float,
    *,
    masks: Masks | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Activation sparsity achieved by a threshold, and what it does to the outputs.

    Runs the data through :func:`activation_threshold` (with the weight masks applied when
    given) and compares the outputs with those of the dense model (no masks, no threshold).

    Returns:
        ``sparsity`` (fraction of exact zeros in the thresholded layers),
        ``natural_sparsity`` (zeros there before thresholding), ``agreement`` (same top-1
        class as the dense model), ``kl`` (mean KL(dense || thresholded)), ``samples``, and
        with labelled data ``accuracy`` and ``dense_accuracy``.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> effect = activation_sparsity_effect(net, torch.randn(32, 4), ["1"], 0.0)
    >>> effect["agreement"], effect["sparsity"] == effect["natural_sparsity"]
    (1.0, True)
    """
    masks = check_masks(masks, optional=True)
    run_on = torch.device(device) if device is not None else model_device(model)
    overrides = masked_weights(model, masks) if masks is not None else {}
    samples = labelled = correct = dense_correct = agree = 0
    kl = 0.0
    with torch.no_grad(), activation_threshold(model, layers, threshold) as run:
        dense_tensors = _tensors_on(model, {}, run_on)
        sparse_tensors = _tensors_on(run.model, overrides, run_on)
        for batch in iter_batches(data, device=run_on):
            dense = _scores(functional_forward(model, dense_tensors, batch.inputs))
            sparse = _scores(functional_forward(run.model, sparse_tensors, batch.inputs))
            agree += int((dense.argmax(1) == sparse.argmax(1)).sum())
            kl += float(
                F.kl_div(
                    F.log_softmax(sparse, dim=1),
                    F.log_softmax(dense, dim=1),
                    log_target=True,
                    reduction="sum",
                )
            )
            if batch.labels is not None:
                labels = batch.labels.reshape(-1).long()
                correct += int((sparse.argmax(1) == labels).sum())
                dense_correct += int((dense.argmax(1) == labels).sum())
                labelled += labels.shape[0]
            samples += dense.shape[0]
    if samples == 0:
        raise ValueError("data is empty: nothing to evaluate")
    result = {
        "sparsity": run.sparsity(),
        "natural_sparsity": run.natural_sparsity(),
        "agreement": agree / samples,
        "kl": max(kl / samples, 0.0),
        "samples": samples,
    }
    if labelled == samples:
        result["accuracy"] = correct / samples
        result["dense_accuracy"] = dense_correct / samples
    return result


# ----------------------------------------------------------------------------------------
# The activation sparsifier


def _sum(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return aggregate + batch


def _sum_abs(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return aggregate + batch.abs()


def _max_abs(aggregate: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return torch.maximum(aggregate, batch.abs())


def _mean_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.mean(dim=0)


def _max_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.amax(dim=0)


def _norm_over_batch(tensor: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(tensor, dim=0)


def threshold_mask(tensor: torch.Tensor, *, threshold: float = 0.0) -> torch.Tensor:
    """Keep (True) where ``|value| >= threshold``: the sparsifier's default ``mask_fn``.

    >>> threshold_mask(torch.tensor([0.1, -2.0, 0.5]), threshold=0.5).tolist()
    [False, True, True]
    """
    return tensor.abs() >= _check_threshold(threshold)


def sparsity_mask(tensor: torch.Tensor, *, sparsity_level: float = 0.5) -> torch.Tensor:
    """Zero (False) the ``sparsity_level`` fraction of values with the smallest ``|value|``.

    Ties are broken by position (earlier values are kept first), so masks are reproducible.

    >>> sparsity_mask(torch.tensor([0.1, -2.0, 0.5, 0.3]), sparsity_level=0.5).tolist()
    [False, True, True, False]
    """
    if isinstance(sparsity_level, bool) or not isinstance(sparsity_level, (int, float)):
        raise TypeError(f"sparsity_level must be a number in [0, 1], got {sparsity_level!r}")
    if not 0 <= sparsity_level <= 1:
        raise ValueError(f"sparsity_level must lie in [0, 1], got {sparsity_level!r}")
    flat = tensor.detach().abs().flatten()
    keep = flat.numel() - round(sparsity_level * flat.numel())
    order = torch.argsort(flat, descending=True, stable=True)[:keep]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[order] = True
    return mask.view(tensor.shape)


AGGREGATE_FNS: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = (
    MappingProxyType({"sum": _sum, "sum of |x|": _sum_abs, "max of |x|": _max_abs})
)
"""Built-in ``aggregate_fn(aggregate, batch)`` choices (the first is the default)."""

REDUCE_FNS: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] = MappingProxyType(
    {
        "mean over batch": _mean_over_batch,
        "max over batch": _max_over_batch,
        "L2 norm over batch": _norm_over_batch,
    }
)
"""Built-in ``reduce_fn(aggregate)`` choices (the first is the default)."""

MASK_FNS: Mapping[str, Callable[..., torch.Tensor]] = MappingProxyType(
    {"threshold": threshold_mask, "sparsity level": sparsity_mask}
)
"""Built-in ``mask_fn(reduced, **sparse_config)`` choices (the first is the default)."""


@dataclass(frozen=True)
class _Config:
    aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reduce_fn: Callable[[torch.Tensor], torch.Tensor]
    mask_fn: Callable[..., torch.Tensor]
    features: tuple[int, ...] | None
    feature_dim: int | None
    sparse_config: Mapping[str, object]


@dataclass
class _Layer:
    config: _Config
    handle: torch.utils.hooks.RemovableHandle | None = None
    data: torch.Tensor | list[torch.Tensor] | None = None
    shape: tuple[int, ...] | None = None  # of the input (or of one feature's slice)
    mask: torch.Tensor | list[torch.Tensor] | None = None


def _check_features(
    features: object, feature_dim: object
) -> tuple[tuple[int, ...] | None, int | None]:
    if feature_dim is not None and (
        isinstance(feature_dim, bool) or not isinstance(feature_dim, int)
    ):
        raise TypeError(
            f"feature_dim must be an int (a dim of the layer's input), got {feature_dim!r}"
        )
    if features is None:
        return None, feature_dim
    if isinstance(features, (int, str)) or not isinstance(features, Sequence):
        raise TypeError(f"features must be a sequence of feature indices, got {features!r}")
    checked = tuple(features)
    bad = [f for f in checked if isinstance(f, bool) or not isinstance(f, int) or f < 0]
    if bad or not checked:
        raise ValueError(
            f"features must be a non-empty sequence of indices >= 0, got {list(features)!r}"
        )
    if feature_dim is None:
        raise ValueError("features need feature_dim: the dim of the input that they index")
    return checked, feature_dim


def _check_mask_fn(
    mask_fn: Callable[..., object], sparse_config: Mapping[str, object], *, complete: bool
) -> None:
    """Whether ``mask_fn(tensor, **sparse_config)`` can be called (``complete``) or could be,
    once more keyword arguments are given (defaults, completed at ``register_layer``)."""
    try:
        signature = inspect.signature(mask_fn)
    except (TypeError, ValueError):  # builtins: checked when called
        return
    bind = signature.bind if complete else signature.bind_partial
    try:
        bind(torch.empty(0), **sparse_config)
    except TypeError as exc:
        name = getattr(mask_fn, "__name__", repr(mask_fn))
        raise ValueError(
            f"mask_fn {name}{signature} cannot take the sparse config {dict(sparse_config)}: "
            f"{exc}; pass the keyword arguments it accepts"
        ) from None


class ActivationSparsifier:
    """Masks for the activations entering chosen layers, computed from data.

    Follows ``torch.ao.pruning``'s experimental activation sparsifier: for every batch, the
    input entering a registered layer is combined into a running aggregate
    (``aggregate_fn(aggregate, input)``, starting from zeros); :meth:`step` reduces it
    (``reduce_fn``), turns it into a mask (``mask_fn(reduced, **sparse_config)``) and starts a
    new aggregate; after :meth:`squash_mask` the mask multiplies the layer's input. With
    ``features`` (indices along ``feature_dim``), each feature gets its own aggregate and
    mask, and only those features are masked. Given the same functions and data, the masks
    equal PyTorch's.

    Defaults: ``aggregate_fn`` sums the inputs element by element (so batches must share a
    shape), ``reduce_fn`` takes the mean over the batch dim, ``mask_fn`` keeps values with
    ``|value| >= threshold`` (:func:`threshold_mask`; ``threshold=0`` keeps all). See
    :data:`AGGREGATE_FNS`, :data:`REDUCE_FNS`, :data:`MASK_FNS` for the built-in choices.

    Unlike PyTorch's, it works on its own copy of the model, ``sparsifier.model``: run data
    through that copy (or call :meth:`observe`); the model you gave is never hooked or
    changed. Layer weights are not touched.

    Args:
        model: The model.
        aggregate_fn: Default ``aggregate_fn(aggregate, input) -> aggregate``.
        reduce_fn: Default ``reduce_fn(aggregate) -> reduced``.
        mask_fn: Default ``mask_fn(reduced, **sparse_config) -> mask`` broadcastable to the
            input (True/1 = kept).
        features: Default feature indices to mask separately, or None for the whole tensor.
        feature_dim: The input dim that ``features`` index (with the batch dim: 1 for the
            channels of a conv input, -1 or 1 for a Linear input).
        **sparse_config: Default keyword arguments of ``mask_fn``.

    >>> net = nn.Sequential(nn.Linear(3, 2)).eval()
    >>> sparsifier = ActivationSparsifier(net, threshold=0.5)
    >>> sparsifier.register_layer("0")
    >>> sparsifier.observe(torch.tensor([[1.0, 0.2, -0.9], [0.6, 0.0, -0.3]]))
    2
    >>> sparsifier.step()
    >>> sparsifier.get_mask("0").tolist()
    [True, False, True]
    >>> sparse_net = sparsifier.squash_mask()  # the copy, masking what enters layer "0"
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mask_fn: Callable[..., torch.Tensor] | None = None,
        features: Sequence[int] | None = None,
        feature_dim: int | None = None,
        **sparse_config: object,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self._names = {id(m): name for name, m in model.named_modules() if name}
        self._source = model  # keeps the ids above from being reused
        self.model = copy_model(model)
        self._defaults = self._config(
            aggregate_fn or _sum,
            reduce_fn or _mean_over_batch,
            mask_fn or threshold_mask,
            features,
            feature_dim,
            sparse_config,
            complete=False,
        )
        self._layers: dict[str, _Layer] = {}

    @staticmethod
    def _config(
        aggregate_fn: object,
        reduce_fn: object,
        mask_fn: object,
        features: object,
        feature_dim: object,
        sparse_config: Mapping[str, object],
        *,
        complete: bool = True,
    ) -> _Config:
        for name, fn in (("aggregate_fn", aggregate_fn), ("reduce_fn", reduce_fn)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {fn!r}")
        if not callable(mask_fn):
            raise TypeError(f"mask_fn must be callable, got {mask_fn!r}")
        checked, dim = _check_features(features, feature_dim)
        _check_mask_fn(mask_fn, sparse_config, complete=complete)
        return _Config(
            aggregate_fn,  # type: ignore[arg-type]
            reduce_fn,  # type: ignore[arg-type]
            mask_fn,
            checked,
            dim,
            MappingProxyType(dict(sparse_config)),
        )

    @property
    def layers(self) -> list[str]:
        """Names of the registered layers."""
        return list(self._layers)

    def _name_of(self, layer: str | nn.Module) -> str:
        if isinstance(layer, nn.Module):
            name = self._names.get(id(layer))
            if name is None:
                name = next((n for n, m in self.model.named_modules() if m is layer and n), None)
            if name is None:
                raise ValueError(
                    f"that {type(layer).__name__} is not a submodule of the sparsifier's model; "
                    "pass one of its modules or a module name"
                )
            return name
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a module name or an nn.Module, got {layer!r}")
        modules = dict(self.model.named_modules())
        if not layer or layer not in modules:
            valid = [n for n in modules if n]
            shown = ", ".join(valid[:24]) + (", ..." if len(valid) > 24 else "")
            raise ValueError(
                f"unknown layer {layer!r}: name a submodule whose input to mask; accepted: {shown}"
            )
        return layer

    def _layer(self, layer: str | nn.Module) -> tuple[str, _Layer]:
        name = self._name_of(layer)
        if name not in self._layers:
            raise ValueError(f"layer {name!r} is not registered; registered: {self.layers}")
        return name, self._layers[name]

    def register_layer(
        self,
        layer: str | nn.Module,
        *,
        aggregate_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mask_fn: Callable[..., torch.Tensor] | None = None,
        features: Sequence[int] | None = None,
        feature_dim: int | None = None,
        **sparse_config: object,
    ) -> None:
        """Start aggregating the input entering ``layer`` (a module name or module).

        Options not given fall back to the sparsifier's defaults; ``sparse_config`` updates
        the default one. Registering a layer again replaces its configuration and data.
        """
        name = self._name_of(layer)
        d = self._defaults
        config = self._config(
            aggregate_fn or d.aggregate_fn,
            reduce_fn or d.reduce_fn,
            mask_fn or d.mask_fn,
            features if features is not None else d.features,
            feature_dim if feature_dim is not None else d.feature_dim,
            {**d.sparse_config, **sparse_config},
        )
        if name in self._layers:
            self.unregister_layer(name)
        state = _Layer(config)
        module = self.model.get_submodule(name)
        state.handle = module.register_forward_pre_hook(self._aggregate_hook(name, state))
        self._layers[name] = state

    def unregister_layer(self, layer: str | nn.Module) -> None:
        """Stop sparsifying ``layer``: its hook, data and mask are dropped."""
        name, state = self._layer(layer)
        if state.handle is not None:
            state.handle.remove()
        del self._layers[name]

    def _aggregate_hook(self, name: str, state: _Layer) -> PreHook:
        config = state.config

        def hook(module: nn.Module, args: tuple) -> None:
            x = _first_tensor(args)
            if x is None:
                raise TypeError(f"the input entering {name!r} is not a tensor")
            with torch.no_grad():
                x = x.detach()
                if config.features is None:
                    state.shape = state.shape or tuple(x.shape)
                    state.data = _aggregate(config, state.data, x, name)
                    return
                slices = _feature_slices(x, config, name)
                state.shape = state.shape or tuple(slices[0].shape)
                data = state.data if isinstance(state.data, list) else [None] * len(slices)
                state.data = [
                    _aggregate(config, d, s, name) for d, s in zip(data, slices, strict=True)
                ]

        return hook

    def observe(
        self,
        data: object,
        *,
        batch_size: int = 128,
        limit: int | None = None,
        device: torch.device | str | None = None,
    ) -> int:
        """Run data through ``self.model`` (without gradients) to aggregate activations.

        The aggregate functions combine batches element by element, so batches whose size
        differs from the first one's (a last, smaller batch) are skipped.

        Returns:
            The number of samples observed.
        """
        if device is not None:
            self.model.to(device)  # the sparsifier's own copy
        size = None
        samples = 0
        with torch.no_grad():
            for batch in iter_batches(data, batch_size=batch_size, limit=limit, device=device):
                size = size or batch.inputs.shape[0]
                if batch.inputs.shape[0] != size:
                    continue
                self.model(batch.inputs)
                samples += size
        return samples

    def step(self) -> None:
        """Turn each layer's aggregate into its mask (reduce, then mask), and start afresh."""
        masks = {}
        with torch.no_grad():
            for name, state in self._layers.items():
                if state.data is None or state.shape is None:
                    raise ValueError(
                        f"no activations entered {name!r} since the last step(): run data "
                        "through sparsifier.model (or call observe) first"
                    )
                config = state.config
                if config.features is None:
                    assert isinstance(state.data, torch.Tensor)
                    masks[name] = _make_mask(config, state.data, state.shape, name)
                else:
                    assert isinstance(state.data, list)
                    masks[name] = [
                        _make_mask(config, d, state.shape, f"{name}, feature {f}")
                        for d, f in zip(state.data, config.features, strict=True)
                    ]
        for name, mask in masks.items():
            self._layers[name].mask = mask
            self._layers[name].data = None

    def get_mask(self, layer: str | nn.Module) -> torch.Tensor | list[torch.Tensor]:
        """The mask of ``layer``: a tensor, or one tensor per feature when ``features`` is set.

        Raises:
            ValueError: If the layer is not registered or :meth:`step` has not made its mask.
        """
        name, state = self._layer(layer)
        if state.mask is None:
            raise ValueError(f"no mask for {name!r} yet: observe data, then call step()")
        return state.mask

    def squash_mask(self, *, attach_sparsify_hook: bool = True) -> nn.Module:
        """Stop aggregating; with ``attach_sparsify_hook``, make each mask multiply its input.

        Returns:
            ``self.model``, the sparsifier's copy of the model, now masking the inputs of the
            registered layers (or plain again, with ``attach_sparsify_hook=False``).
        """
        if attach_sparsify_hook:
            missing = [n for n, s in self._layers.items() if s.mask is None]
            if missing:
                raise ValueError(f"no mask yet for {missing}: call step() before squash_mask()")
        for name, state in self._layers.items():
            if state.handle is not None:
                state.handle.remove()
                state.handle = None
            state.data = None
            if attach_sparsify_hook:
                module = self.model.get_submodule(name)
                state.handle = module.register_forward_pre_hook(self._sparsify_hook(state))
        return self.model

    @staticmethod
    def _sparsify_hook(state: _Layer) -> PreHook:
        config, mask = state.config, state.mask

        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            if config.features is None:
                assert isinstance(mask, torch.Tensor)
                return (x * mask.to(x.device), *args[1:])
            assert isinstance(mask, list) and config.feature_dim is not None
            masked = x.clone()  # never write into the caller's tensor
            for feature, part in zip(config.features, mask, strict=True):
                masked.narrow(config.feature_dim, feature, 1).mul_(part.to(x.device))
            return (masked, *args[1:])

        return hook

    def __repr__(self) -> str:
        return f"ActivationSparsifier(layers={self.layers})"


def _aggregate(
    config: _Config, data: torch.Tensor | None, x: torch.Tensor, name: str
) -> torch.Tensor:
    start = torch.zeros_like(x) if data is None else data
    try:
        return config.aggregate_fn(start, x)
    except RuntimeError as exc:
        raise ValueError(
            f"aggregate_fn could not combine the aggregate of shape {tuple(start.shape)} with "
            f"an input of shape {tuple(x.shape)} entering {name!r}: {exc}. The default sums "
            "inputs element by element, so batches must all have the same shape "
            "(observe() skips a smaller last batch)"
        ) from None


def _feature_slices(x: torch.Tensor, config: _Config, name: str) -> list[torch.Tensor]:
    assert config.features is not None and config.feature_dim is not None
    dim = config.feature_dim
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(
            f"feature_dim={dim} is out of range for the input of shape {tuple(x.shape)} "
            f"entering {name!r}; accepted: {-x.ndim} to {x.ndim - 1}"
        )
    size = x.shape[dim]
    bad = [f for f in config.features if f >= size]
    if bad:
        raise ValueError(
            f"feature index {bad} out of range for dim {dim} of the input entering {name!r} "
            f"(shape {tuple(x.shape)}); accepted: 0 to {size - 1}"
        )
    index = torch.tensor(config.features, device=x.device)
    return list(x.index_select(dim, index).split(1, dim=dim))


def _make_mask(
    config: _Config, data: torch.Tensor, shape: tuple[int, ...], name: str
) -> torch.Tensor:
    reduced = config.reduce_fn(data)
    mask = config.mask_fn(reduced, **config.sparse_config)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask_fn must return a tensor, got {type(mask).__name__} for {name!r}")
    try:
        fits = torch.broadcast_shapes(mask.shape, shape) == torch.Size(shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask_fn returned a mask of shape {tuple(mask.shape)} for {name!r}, which does not "
            f"broadcast to the input of shape {shape} that it multiplies; return one value per "
            f"position of a sample, shape {shape[1:]} (reduce_fn reducing dim 0), or any "
            "shape that broadcasts"
        )
    return mask.detach()
