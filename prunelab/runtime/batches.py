"""One way to walk over evaluation or calibration data, whatever form it comes in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .checks import check_count

__all__ = ["Batch", "iter_batches"]


@dataclass(frozen=True)
class Batch:
    """Inputs and (optionally) labels of one batch."""

    inputs: torch.Tensor
    labels: torch.Tensor | None = None

    def to(self, device: torch.device | str | None) -> Batch:
        if device is None:
            return self
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.inputs.to(device), labels)


def _as_batch(item: object) -> Batch:
    if isinstance(item, torch.Tensor):
        return Batch(item)
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        if len(item) == 1:
            return Batch(item[0])
        if len(item) == 2 and isinstance(item[1], torch.Tensor):
            return Batch(item[0], item[1])
    if isinstance(item, dict) and isinstance(item.get("x"), torch.Tensor):
        return Batch(item["x"], item.get("y"))
    raise TypeError(
        "each batch must be a tensor of inputs or an (inputs, labels) pair of tensors, "
        f"got {type(item).__name__}"
    )


def _tensor_slices(data: object, batch_size: int) -> list | None:
    """Batches cut straight from tensors, for data held as whole tensors.

    A DataLoader would index and re-stack every sample; slicing gives the same batches for a
    fraction of the cost (it dominates evaluation of small models).
    """
    if isinstance(data, torch.Tensor):
        tensors = (data,)
    elif isinstance(data, TensorDataset):
        tensors = data.tensors
    elif isinstance(getattr(data, "inputs", None), torch.Tensor) and isinstance(data, Dataset):
        labels = getattr(data, "labels", None)
        tensors = (data.inputs,) if labels is None else (data.inputs, labels)
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(d, torch.Tensor) for d in data)
        and data[0].shape[:1] == data[1].shape[:1]
    ):
        tensors = data
    else:
        return None
    batch_size = check_count(batch_size, what="batch_size")
    total = tensors[0].shape[0] if tensors[0].ndim else 0
    return [
        tuple(t[start : start + batch_size] for t in tensors)
        for start in range(0, total, batch_size)
    ]


def iter_batches(
    data: object,
    *,
    batch_size: int = 128,
    limit: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """Yield :class:`Batch` objects from tensors, (x, y) pairs, Datasets or DataLoaders.

    Args:
        data: A tensor of inputs; an ``(inputs, labels)`` tuple of tensors; a ``Dataset``
            yielding ``(x, y)``; or any iterable of batches (e.g. a ``DataLoader``).
        batch_size: Batch size used when ``data`` is not already batched.
        limit: Stop after this many batches.
        device: Move each batch there.

    >>> [b.inputs.shape[0] for b in iter_batches(torch.zeros(5, 2), batch_size=2)]
    [2, 2, 1]
    """
    if (sliced := _tensor_slices(data, batch_size)) is not None:
        data = sliced
    elif isinstance(data, torch.Tensor):
        data = TensorDataset(data)
    elif (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(d, torch.Tensor) for d in data)
        and data[0].shape[:1] == data[1].shape[:1]
    ):
        data = TensorDataset(*data)
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be a tensor, an (inputs, labels) pair, a Dataset or an iterable of "
            f"batches, got {type(data).__name__}"
        )
    for index, item in enumerate(data):
        if limit is not None and index >= limit:
            return
        yield _as_batch(item).to(device)
