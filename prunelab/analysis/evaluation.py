"""Measurements every feature reports: accuracy, loss, fidelity, size, FLOPs and latency.

*Fidelity* compares a pruned model with its dense self, sample by sample: top-1 agreement
(fraction of inputs where both predict the same class) and the mean KL divergence
``KL(p_dense || p_pruned)`` of their output distributions. It needs no labels, so a model
without labelled data can still be judged.

The dense model's outputs are cached per (model, data, device), so evaluating many mask sets
on the same data costs one forward pass each. The cache notices a changed model (any
parameter or buffer modified in place, or a different model that reuses a freed object's id)
and recomputes; :func:`clear_cache` empties it.

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

import math
import statistics
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from ..core.apply import masked_weights
from ..core.masks import Masks, check_masks
from ..core.targets import Target, targets
from ..runtime.batches import iter_batches
from ..runtime.functional import (
    check_materialized,
    functional_forward,
    model_device,
    run_device,
    structural_copy,
    tensors_on,
)
from ..runtime.memory import model_bytes
from ..runtime.metrics import (
    FIDELITY,
    METRICS,
    MetricTotals,
    accumulate,
    batch_logits,
    check_metrics,
    summarize,
)

__all__ = [
    "clear_cache",
    "evaluate",
    "flops_by_layer",
    "latency",
    "model_stats",
    "with_masks",
]

_CACHE_SIZE = 8
_RNN = (nn.RNN, nn.LSTM, nn.GRU)


# -- dense-output cache ----------------------------------------------------------------------


@dataclass
class _Entry:
    model: weakref.ref
    data: object  # held so that its id cannot be reused while the entry lives
    fingerprint: tuple
    logits: torch.Tensor


_cache: OrderedDict[tuple, _Entry] = OrderedDict()


def clear_cache() -> None:
    """Forget every cached dense output."""
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


def _cached(model: nn.Module, data: object, device: torch.device) -> torch.Tensor | None:
    key = _cache_key(model, data, device)
    entry = _cache.get(key)
    if entry is None:
        return None
    fresh = (
        entry.model() is model
        and entry.data is data
        and entry.fingerprint == (_model_fingerprint(model), _data_fingerprint(data))
    )
    if not fresh:
        del _cache[key]
        return None
    _cache.move_to_end(key)
    return entry.logits


def _store(model: nn.Module, data: object, device: torch.device, logits: torch.Tensor) -> None:
    key = _cache_key(model, data, device)
    fingerprint = (_model_fingerprint(model), _data_fingerprint(data))
    _cache[key] = _Entry(weakref.ref(model), data, fingerprint, logits)
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
    cached = _cached(model, data, device)
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
        _store(model, data, device, logits)
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
    cached = _cached(model, data, device)
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
        _store(model, data, device, torch.cat(chunks))


# -- size and FLOPs --------------------------------------------------------------------------


def _rnn_positions(module: nn.Module, args: tuple) -> int:
    x = args[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return int(x.data.shape[0])
    return x.numel() // x.shape[-1]


def _module_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[int, dict, dict]:
    """Total FLOPs, FLOPs per module fqn, and time steps seen by each RNN module."""
    positions: dict[str, int] = {}
    handles = []
    model = structural_copy(model)  # hooks on a copy: other threads may share the model
    try:
        for name, module in model.named_modules():
            if isinstance(module, _RNN):

                def record(mod, args, _out, name=name):
                    positions[name] = positions.get(name, 0) + _rnn_positions(mod, args)

                handles.append(module.register_forward_hook(record))
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            functional_forward(model, {}, example_input.to(model_device(model)), private=True)
    finally:
        for handle in handles:
            handle.remove()
    per_module: dict[str, int] = {}
    for key, counts in counter.get_flop_counts().items():
        if key == "Global":
            continue
        _, _, fqn = key.partition(".")
        per_module[fqn] = per_module.get(fqn, 0) + int(sum(counts.values()))
    return int(counter.get_total_flops()), per_module, positions


def _flop_table(
    model: nn.Module, masks: Masks | None, example_input: torch.Tensor
) -> tuple[int, pd.DataFrame]:
    """Total dense FLOPs and the per-target table, from one counted forward pass."""
    total, per_module, positions = _module_flops(model, example_input)
    try:
        found = targets(model)
    except ValueError:  # nothing prunable (e.g. an exported program): no rows
        found = []
    by_module: dict[str, list[Target]] = {}
    for target in found:
        by_module.setdefault(target.module_fqn, []).append(target)
    rows = []
    for module_fqn, group in by_module.items():
        counted = per_module.get(module_fqn, 0)
        size = sum(t.numel for t in group)
        for target in group:
            if counted:  # shared among the module's weights by size
                flops = round(counted * target.numel / size)
            else:  # recurrent layers: 2 x time steps x weight elements, not in the counter
                flops = 2 * positions.get(module_fqn, 0) * target.numel
                total += flops
            rows.append({"fqn": target.fqn, "module_type": target.module_type, "flops": int(flops)})
    table = pd.DataFrame(rows, columns=["fqn", "module_type", "flops"])
    return total, with_masks(table, masks)


def with_masks(table: pd.DataFrame, masks: Masks | None) -> pd.DataFrame:
    """A FLOP table (from :func:`flops_by_layer`) with ``kept`` and ``effective_flops`` for
    ``masks``: each layer's FLOPs scaled by the fraction of its weight that is kept.

    Counting FLOPs takes a forward pass; rescaling a dense table for new masks does not, which
    is what the app does on every slider move.

    >>> from torch import nn
    >>> from prunelab.core.masks import Masks
    >>> dense = flops_by_layer(nn.Linear(4, 2), example_input=torch.zeros(1, 4))
    >>> mask = torch.tensor([[True] * 4, [False] * 4])
    >>> with_masks(dense, Masks({"weight": mask}))["effective_flops"].tolist()
    [8]
    """
    fractions = {}
    if masks is not None:
        # counts, not masks.per_layer(): a DataFrame per slider move costs more than the rest
        fractions = {fqn: n / masks[fqn].numel() for fqn, n in masks.kept_counts().items()}
    kept = [float(fractions.get(fqn, 1.0)) for fqn in table["fqn"]]
    out = table[["fqn", "module_type", "flops"]].copy()
    out["kept"] = kept
    out["effective_flops"] = [round(f * k) for f, k in zip(out["flops"], kept, strict=True)]
    return out


def flops_by_layer(
    model: nn.Module, masks: Masks | None = None, *, example_input: torch.Tensor
) -> pd.DataFrame:
    """FLOPs of each prunable weight for one forward pass of ``example_input``, dense and
    effective (scaled by the fraction of the weight that the masks keep).

    FLOPs come from ``torch.utils.flop_counter`` (a multiply-add counts 2). Recurrent layers,
    which the counter does not see, are counted as ``2 x time steps x weight elements``.

    Returns:
        A DataFrame with fqn, module_type, flops, kept (fraction) and effective_flops.

    >>> from torch import nn
    >>> table = flops_by_layer(nn.Linear(4, 2), example_input=torch.zeros(1, 4))
    >>> table[["fqn", "flops"]].values.tolist()
    [['weight', 16]]
    """
    return _flop_table(model, masks, example_input)[1]


def model_stats(
    model: nn.Module, masks: Masks | None = None, *, example_input: torch.Tensor
) -> dict[str, float]:
    """Size and compute of a model, dense and with masks applied.

    Args:
        model: The dense model; not modified.
        masks: Masks to account for, or None.
        example_input: One input batch; FLOPs are for a forward pass of this batch.

    Returns:
        ``parameters``; ``nonzero_parameters`` (after masking); ``sparsity`` (fraction of
        parameters that are zero); ``dense_bytes`` (parameters and buffers stored densely);
        ``flops`` (dense, from ``torch.utils.flop_counter``) and ``effective_flops`` (each
        prunable layer's FLOPs scaled by its kept fraction: a first-order estimate of the
        work a sparse kernel would do).

    >>> from torch import nn
    >>> stats = model_stats(nn.Linear(4, 2), example_input=torch.zeros(1, 4))
    >>> stats["parameters"], stats["flops"], stats["effective_flops"]
    (10, 16, 16)
    """
    check_masks(masks, optional=True)
    check_materialized(model)  # before counting: a meta tensor has nothing to count
    overrides = masked_weights(model, masks) if masks is not None else {}
    parameters = nonzero = 0
    for name, param in model.named_parameters():
        parameters += param.numel()
        nonzero += int(torch.count_nonzero(overrides.get(name, param.detach())))
    flops, table = _flop_table(model, masks, example_input)
    effective = flops - int(table["flops"].sum()) + int(table["effective_flops"].sum())
    return {
        "parameters": parameters,
        "nonzero_parameters": nonzero,
        "sparsity": 1.0 - nonzero / parameters if parameters else 0.0,
        "dense_bytes": model_bytes(model),  # tied tensors are stored once
        "flops": flops,
        "effective_flops": effective,
    }


# -- latency ---------------------------------------------------------------------------------


def latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    masks: Masks | None = None,
    repeats: int = 20,
    warmup: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Wall-clock time of one forward pass: median and 90th percentile over ``repeats``.

    Masked weights are computed once before timing, so the time is that of the model with
    zeros in it (dense kernels: zeros alone do not make a model faster).

    Returns:
        ``median_s``, ``p90_s``, ``min_s`` (seconds) and ``repeats``.

    >>> from torch import nn
    >>> timing = latency(nn.Linear(4, 2), torch.zeros(1, 4), repeats=3, warmup=1)
    >>> timing["min_s"] <= timing["median_s"] <= timing["p90_s"]
    True
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    run_on = run_device(model, device)
    overrides = masked_weights(model, masks) if masks is not None else {}
    overrides = tensors_on(model, overrides, run_on)
    example_input = example_input.to(run_on)
    sync = torch.cuda.synchronize if run_on.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for index in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            functional_forward(model, overrides, example_input)
            sync()
            if index >= warmup:
                times.append(time.perf_counter() - start)
    times.sort()
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    return {
        "median_s": statistics.median(times),
        "p90_s": p90,
        "min_s": times[0],
        "repeats": repeats,
    }
