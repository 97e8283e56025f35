"""Size and compute: parameter, nonzero and FLOP counts, dense and with masks applied.

FLOPs come from one counted forward pass (``torch.utils.flop_counter``: a multiply-add counts
2) on a structural copy of the model, so hooks and counting never touch a model that other
threads may share. Recurrent layers, which the counter does not see, are counted from the time
steps they run. The *effective* FLOPs of a masked layer are its FLOPs scaled by the fraction of
its weight that is kept: a first-order estimate of what a sparse kernel would do.

>>> import torch
>>> from torch import nn
>>> model_stats(nn.Linear(4, 2), example_input=torch.zeros(1, 4))["flops"]
16
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.apply import masked_weights
from ..core.masks import Masks, check_masks
from ..core.targets import RNN, Target, targets
from ..runtime.functional import (
    check_materialized,
    functional_forward,
    model_device,
    structural_copy,
)
from ..runtime.memory import model_bytes

__all__ = ["MaskSummary", "flops_by_layer", "mask_summary", "model_stats", "with_masks"]


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
            if isinstance(module, RNN):

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


@dataclass(frozen=True)
class MaskSummary:
    """What masks leave of the pruned layers: sparsity, kept weights, FLOPs dense and effective.

    The numbers beside every sparsity control (the Prune page, the Jupyter explorer).
    """

    sparsity: float
    kept: int
    total: int
    dense_flops: int
    effective_flops: int

    @property
    def flops_change(self) -> float:
        """Relative change of the FLOPs (-0.3: 30% fewer)."""
        return (self.effective_flops - self.dense_flops) / max(self.dense_flops, 1)


def mask_summary(masks: Masks, flops: pd.DataFrame | None) -> MaskSummary:
    """:class:`MaskSummary` of ``masks``, given the dense FLOP table (:func:`flops_by_layer`,
    counted once per model, so that a slider move costs no FLOP count); without a table
    (None: no example input to count with) both FLOP counts are 0.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 4))
    >>> masks = Masks({"0.weight": torch.arange(16).reshape(4, 4) % 2 == 0})
    >>> summary = mask_summary(masks, flops_by_layer(net, example_input=torch.randn(1, 4)))
    >>> summary.kept, summary.total, summary.flops_change
    (8, 16, -0.5)
    """
    dense = effective = 0
    if flops is not None:
        scaled = with_masks(flops, masks)
        dense, effective = int(scaled["flops"].sum()), int(scaled["effective_flops"].sum())
    return MaskSummary(
        sparsity=masks.sparsity(),
        kept=sum(masks.kept_counts().values()),
        total=sum(masks[fqn].numel() for fqn in masks),
        dense_flops=dense,
        effective_flops=effective,
    )


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
