"""Measurements every feature reports: accuracy, loss and fidelity to the dense model.

*Fidelity* compares a pruned model with its dense self, sample by sample: top-1 agreement
(fraction of inputs where both predict the same class) and the mean KL divergence
``KL(p_dense || p_pruned)`` of their output distributions. It needs no labels, so a model
without labelled data can still be judged.

For a language model (outputs ``(batch, positions, vocab)``, labels the next tokens) every
metric is per token and ``perplexity`` is reported too; see :mod:`prunelab.runtime.metrics`.

The dense model's outputs are cached per (model, data, device), so evaluating many mask sets
on the same data costs one forward pass each. The cache is bounded in bytes, not only in
entries: a language model's outputs are ``sequences x positions x vocab`` floats (64
sequences of 128 tokens over 50,257 GPT-2 tokens are 1.6 GiB), so outputs over
:data:`CACHE_ENTRY_BYTES` are never stored (the dense model then runs beside the pruned one,
batch by batch, and the numbers are the same), and the oldest entries go once all of them
pass :data:`CACHE_BYTES`. They are kept in float32, exactly as computed: a lower precision
would shift small KL divergences and flip near-tied top-1 agreements. The cache notices a
changed model (any parameter or buffer modified in place, or a different model that reuses a
freed object's id) and recomputes; :func:`clear_cache` empties it. It is safe to share
between threads (the app's sessions): a lock guards every lookup, store and eviction, never a
forward pass.

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
    accumulate_batch,
    batch_logits,
    check_metrics,
    summarize,
)

__all__ = ["CACHE_BYTES", "CACHE_ENTRY_BYTES", "clear_cache", "evaluate"]

_CACHE_SIZE = 8
CACHE_BYTES = 512 * 2**20  # all cached dense outputs together, at most
CACHE_ENTRY_BYTES = 256 * 2**20  # dense outputs of one (model, data, device), at most


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
    if _nbytes(logits) > CACHE_ENTRY_BYTES:
        return
    with _lock:
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE or (
            len(_cache) > 1 and sum(_nbytes(e.logits) for e in _cache.values()) > CACHE_BYTES
        ):
            _cache.popitem(last=False)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


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


class _Chunks:
    """Dense outputs gathered on the CPU while they stay under the cache's entry limit."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] | None = []
        self.size = 0

    def add(self, logits: torch.Tensor) -> None:
        if self.chunks is None:
            return
        self.size += _nbytes(logits)
        if self.size > CACHE_ENTRY_BYTES:
            self.chunks = None  # too big to cache: stop holding them
        else:
            self.chunks.append(logits.cpu())

    def store(self, model: nn.Module, data: object, device: torch.device, fingerprint) -> None:
        if self.chunks and not isinstance(data, Iterator):
            _store(model, data, device, fingerprint, torch.cat(self.chunks))


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
        model: The dense model: a classifier (outputs ``(batch, classes)`` scores) or a
            causal language model (``(batch, positions, vocab)``, a Hugging Face output's
            ``.logits`` too) with labels holding the next token at each position.
        data: Anything :func:`prunelab.runtime.batches.iter_batches` reads: tensors, an
            ``(inputs, labels)`` pair, a Dataset (e.g. from :func:`prunelab.io.data.load`) or an
            unshuffled DataLoader.
        masks: Masks to evaluate; None evaluates the dense model (agreement 1, kl 0).
        device: Where to run (default: where the model is).
        metrics: Any of ``"accuracy"``, ``"loss"`` (mean cross-entropy), ``"agreement"``
            (top-1 agreement with the dense model), ``"kl"`` (mean KL(dense || pruned)) and
            ``"perplexity"`` (a language model's ``exp`` of the mean token loss, left out for
            a classifier). For a language model each is per token (see
            :mod:`prunelab.runtime.metrics`).
        batch_size: Batch size when ``data`` is not already batched.

    Returns:
        The requested metrics plus ``"samples"`` (sequences, for a language model).
        ``accuracy``, ``loss`` and ``perplexity`` are present only when the data has labels.

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
            _masked_pass(model, data, masks, run_on, batch_size, totals, chosen)
    if totals.samples == 0:
        raise ValueError("data is empty: nothing to evaluate")
    return summarize(totals, chosen, dense=masks is None)


def _masked_pass(
    model: nn.Module,
    data: object,
    masks: Masks,
    device: torch.device,
    batch_size: int,
    totals: MetricTotals,
    chosen: tuple[str, ...],
) -> None:
    """Evaluate the masked model; for fidelity, the dense outputs come from the cache or from
    the dense model run on each batch beside the masked one (filling the cache on the way)."""
    cached, fingerprint, fresh = None, None, _Chunks()
    fidelity = any(m in chosen for m in FIDELITY)
    if fidelity:
        _check_rereadable(data)
        cached, fingerprint = _cached(model, data, device)
    dense_tensors = tensors_on(model, {}, device) if fidelity and cached is None else None
    overrides = tensors_on(model, masked_weights(model, masks), device)
    for batch in iter_batches(data, batch_size=batch_size, device=device):
        reference = None
        if cached is not None:
            n = batch.inputs.shape[0]
            reference = cached[totals.samples : totals.samples + n]
            if reference.shape[0] != n:
                raise ValueError(
                    f"data gave {cached.shape[0]} samples on the dense pass and more on the "
                    "pruned pass; fidelity needs data that reads the same every time"
                )
        elif dense_tensors is not None:
            reference = batch_logits(model, dense_tensors, batch.inputs)
            fresh.add(reference)
        logits = batch_logits(model, overrides, batch.inputs)
        accumulate_batch(totals, logits, batch.labels, reference, chosen)
    if cached is not None and cached.shape[0] != totals.samples:
        raise ValueError(
            f"data gave {cached.shape[0]} samples on the dense pass and "
            f"{totals.samples} on the pruned pass; fidelity needs data that reads the "
            "same every time"
        )
    if dense_tensors is not None:
        fresh.store(model, data, device, fingerprint)


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
    fresh = _Chunks()
    for batch in iter_batches(data, batch_size=batch_size, device=device):
        if cached is not None:
            n = batch.inputs.shape[0]
            logits = cached[totals.samples : totals.samples + n].to(device)
        else:
            logits = batch_logits(model, tensors, batch.inputs)
            fresh.add(logits)
        accumulate(totals, logits, batch.labels, None, chosen)
    if cached is None:
        fresh.store(model, data, device, fingerprint)
