"""Measurements every feature reports: accuracy, loss and fidelity to the dense model.

*Fidelity* compares a pruned model with its dense self, sample by sample: top-1 agreement
(fraction of inputs where both predict the same class) and the mean KL divergence
``KL(p_dense || p_pruned)`` of their output distributions. It needs no labels, so a model
without labelled data can still be judged.

The dense model's outputs are cached per (model, data, device), so evaluating many mask sets
on the same data costs one forward pass each. The cache notices a changed model (any
parameter or buffer modified in place, or a different model that reuses a freed object's id)
and recomputes; :func:`clear_cache` empties it. It is safe to share between threads (the app's
sessions): a lock guards every lookup, store and eviction, never a forward pass.

>>> import torch
>>> from torch import nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
>>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
>>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.0)
>>> evaluate(net, (x, y), masks=masks)["agreement"]
1.0
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from ..core.apply import masked_weights
from ..core.masks import Masks, check_masks
from ..runtime.batches import iter_batches
from ..runtime.functional import (
    run_device,
    tensors_on,
)
from ..runtime.metrics import (
    FIDELITY,
    METRICS,
    MetricTotals,
    accumulate,
    batch_logits,
    check_metrics,
    summarize,
)

__all__ = ["clear_cache", "evaluate"]

_CACHE_SIZE = 8


# -- dense-output cache ----------------------------------------------------------------------
#
# One cache for the process, shared by the app's sessions, which run in threads: every read
# and write of ``_cache`` holds ``_lock``. The forward pass that fills an entry runs outside
# the lock (it can take seconds), so two threads missing the same entry at once may both
# compute it; the second store simply replaces the first, which holds the same values.


@dataclass(frozen=True)
class _Entry:
    model: weakref.ref
    data: object  # held so that its id cannot be reused while the entry lives
    fingerprint: tuple
    logits: torch.Tensor


_cache: OrderedDict[tuple, _Entry] = OrderedDict()
_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every cached dense output."""
    with _lock:
        _cache.clear()


def _tensor_state(tensor: torch.Tensor) -> tuple:
    # _version counts in-place writes, so an edited weight or dataset changes the fingerprint
    return (tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype)


def _model_fingerprint(model: nn.Module) -> tuple:
    state = [(name, _tensor_state(t)) for name, t in model.named_parameters()]
    state += [(name, _tensor_state(t)) for name, t in model.named_buffers()]
    return (model.training, *state)


def _data_fingerprint(data: object) -> tuple:
    if isinstance(data, torch.Tensor):
        return (_tensor_state(data),)
    if isinstance(data, (tuple, list)) and all(isinstance(d, torch.Tensor) for d in data):
        return tuple(_tensor_state(d) for d in data)
    tensors = [getattr(data, name, None) for name in ("inputs", "labels")]
    state = tuple(_tensor_state(t) for t in tensors if isinstance(t, torch.Tensor))
    length = len(data) if hasattr(data, "__len__") else None
    return (length, *state)


def _cache_key(model: nn.Module, data: object, device: torch.device) -> tuple:
    return (id(model), id(data), str(device))


def _cached(
    model: nn.Module, data: object, device: torch.device
) -> tuple[torch.Tensor | None, tuple]:
    """The cached dense logits if they are still those of ``model`` on ``data``, and the
    fingerprint of both as they are now (for :func:`_store` after a fresh pass).

    The fingerprint is taken before the pass it will describe, so a model edited during
    that pass is not cached under its new state with outputs of the old one.
    """
    key = _cache_key(model, data, device)
    fingerprint = (_model_fingerprint(model), _data_fingerprint(data))
    with _lock:
        entry = _cache.get(key)
        if entry is None:
            return None, fingerprint
        if entry.model() is model and entry.data is data and entry.fingerprint == fingerprint:
            _cache.move_to_end(key)
            return entry.logits, fingerprint
        del _cache[key]  # stale: the model or data changed, or its id now names another
        return None, fingerprint


def _store(
    model: nn.Module, data: object, device: torch.device, fingerprint: tuple, logits: torch.Tensor
) -> None:
    key = _cache_key(model, data, device)
    entry = _Entry(weakref.ref(model), data, fingerprint, logits)
    with _lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


# -- evaluation ------------------------------------------------------------------------------


def _check_rereadable(data: object) -> None:
    if isinstance(data, Iterator):
        raise TypeError(
            "data is a one-shot iterator, but fidelity needs to read it twice (dense and "
            "masked); pass tensors, a Dataset or a DataLoader"
        )
    if isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler):
        raise ValueError(
            "data is a shuffling DataLoader; fidelity compares dense and pruned outputs sample "
            "by sample, so use shuffle=False"
        )


def _denselogits_of(
    model: nn.Module, data: object, device: torch.device, batch_size: int
) -> torch.Tensor:
    cached, fingerprint = _cached(model, data, device)
    if cached is not None:
        return cached
    tensors = tensors_on(model, {}, device)
    chunks = [
        batch_logits(model, tensors, batch.inputs).cpu()
        for batch in iter_batches(data, batch_size=batch_size, device=device)
    ]
    if not chunks:
        raise ValueError("data is empty: nothing to evaluate")
    logits = torch.cat(chunks)
    if not isinstance(data, Iterator):
        _store(model, data, device, fingerprint, logits)
    return logits


def evaluate(
    model: nn.Module,
    data: object,
    *,
    masks: Masks | None = None,
    device: torch.device | str | None = None,
    metrics: Sequence[str] = METRICS,
    batch_size: int = 128,
) -> dict[str, float]:
    """Accuracy, mean loss and fidelity to the dense model, with or without masks.

    The masks are applied as :func:`prunelab.masked_forward` applies them (masked weights
    swapped in through ``functional_call``, computed once per call); the model is never
    modified. It runs in the mode it is in, so pass a model in eval mode.

    Args:
        model: The dense classification model (outputs ``(batch, classes)`` scores).
        data: Anything :func:`prunelab.runtime.batches.iter_batches` reads: tensors, an
            ``(inputs, labels)`` pair, a Dataset (e.g. from :func:`prunelab.io.data.load`) or an
            unshuffled DataLoader.
        masks: Masks to evaluate; None evaluates the dense model (agreement 1, kl 0).
        device: Where to run (default: where the model is).
        metrics: Any of ``"accuracy"``, ``"loss"`` (mean cross-entropy), ``"agreement"``
            (top-1 agreement with the dense model) and ``"kl"`` (mean KL(dense || pruned)).
        batch_size: Batch size when ``data`` is not already batched.

    Returns:
        The requested metrics plus ``"samples"``. ``accuracy`` and ``loss`` are present only
        when the data has labels.

    Raises:
        ValueError: For an unknown metric, empty data, a shuffling DataLoader, or a model that
            does not output class scores.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(3, 2).eval()
    >>> result = evaluate(net, torch.randn(10, 3))  # unlabelled: fidelity only
    >>> sorted(result)
    ['agreement', 'kl', 'samples']
    """
    chosen = check_metrics(metrics)
    check_masks(masks, optional=True)
    run_on = run_device(model, device)
    totals = MetricTotals()
    with torch.no_grad():
        if masks is None:
            _dense_pass(model, data, run_on, batch_size, totals, chosen)
        else:
            dense = None
            if any(m in chosen for m in FIDELITY):
                _check_rereadable(data)
                dense = _denselogits_of(model, data, run_on, batch_size)
            overrides = tensors_on(model, masked_weights(model, masks), run_on)
            for batch in iter_batches(data, batch_size=batch_size, device=run_on):
                logits = batch_logits(model, overrides, batch.inputs)
                accumulate(totals, logits, batch.labels, dense, chosen)
            if dense is not None and dense.shape[0] != totals.samples:
                raise ValueError(
                    f"data gave {dense.shape[0]} samples on the dense pass and "
                    f"{totals.samples} on the pruned pass; fidelity needs data that reads the "
                    "same every time"
                )
    if totals.samples == 0:
        raise ValueError("data is empty: nothing to evaluate")
    return summarize(totals, chosen, dense=masks is None)


def _dense_pass(
    model: nn.Module,
    data: object,
    device: torch.device,
    batch_size: int,
    totals: MetricTotals,
    chosen: tuple[str, ...],
) -> None:
    """Evaluate the dense model in one pass, filling the cache on the way."""
    cached, fingerprint = _cached(model, data, device)
    tensors = tensors_on(model, {}, device) if cached is None else {}
    chunks = []
    for batch in iter_batches(data, batch_size=batch_size, device=device):
        if cached is not None:
            n = batch.inputs.shape[0]
            logits = cached[totals.samples : totals.samples + n].to(device)
        else:
            logits = batch_logits(model, tensors, batch.inputs)
            chunks.append(logits.cpu())
        accumulate(totals, logits, batch.labels, None, chosen)
    if cached is None and chunks and not isinstance(data, Iterator):
        _store(model, data, device, fingerprint, torch.cat(chunks))
