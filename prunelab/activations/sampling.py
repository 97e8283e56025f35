"""Which values of a batch the streaming statistics read: every one, or an even sample.

Statistics of every value take several times a forward pass on a CPU (ResNet-18, batch 16:
4.8x), while a sample of at most :data:`SAMPLE` values per channel and batch keeps them within
the goal of 15% on models whose forward pass takes 50 ms or more (1.05x there; both measured
by ``benchmarks/bench_activations.py``). ``sample=None`` reads every value.

The sample takes as many inputs as possible (every k-th of the batch) and on each input
positions from a low-discrepancy sequence, other positions for each input and each batch, so
that no part of a map is favoured (a regular stride could line up with the rows of an image).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["SAMPLE"]

SAMPLE = 128
"""Values per channel that each batch adds to the statistics, by default."""
_GOLDEN = 0.6180339887498949  # fractional parts of multiples spread evenly over [0, 1)
_PLASTIC = 0.7548776662466927
_PHASES = 64  # batches after which the sampled positions repeat
_INDICES = 64  # sample indices cached (one per layer shape and phase) ...
_INDEX_CACHED = 1 << 15  # ... of at most this many entries each: 16 MiB in all at most


def _check_sample(sample: object) -> int | None:
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
        raise TypeError(f"sample must be a number of values or None, got {sample!r}")
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be at least 1 (or None for every value), got {sample}")
    return sample


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


def _sampled(
    values: np.ndarray | torch.Tensor, plan: tuple[int, ...], batch: int
) -> np.ndarray | torch.Tensor:
    """The (channels, rows x per_row) sample of the ``batch``-th batch, read as ``plan``
    (before, channels, after, rows, step, per_row) says: a copy, on the values' device."""
    _, channels, after, rows, step, per_row = plan
    index = _sample_index(rows, step, batch % step, per_row, channels, after, batch % _PHASES)
    if isinstance(values, torch.Tensor):
        return values.take(torch.tensor(index, device=values.device))
    return values.take(index)
