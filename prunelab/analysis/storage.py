"""Sparse storage: what masked weights really cost in bytes, and files that hold them.

Byte sizes of each masked weight in four layouts, exactly as the tensors this module writes
(``to_sparse``, :func:`save_sparse`) hold them:

* ``dense``: ``numel x value bytes``.
* ``coo``: int64 indices, one per dimension per kept weight, plus the values:
  ``nnz x (ndim x 8 + value bytes)`` (``torch.sparse_coo_tensor``).
* ``csr``: on the 2-D view ``(out, rest)``: int64 row pointers and column indices plus the
  values: ``(rows + 1) x 8 + nnz x (8 + value bytes)`` (``torch.sparse_csr_tensor``).
* ``bitmask``: one bit per weight, packed, plus the kept values:
  ``ceil(numel / 8) + nnz x value bytes``.

``nnz`` is the number of weights the mask keeps (a kept weight that happens to be zero is
still stored). With ``bits=k``, the kept values are quantized to k bits (symmetric, one
float32 scale per tensor) and stored after the cheapest positions:
``positions + ceil(nnz x k / 8) + 4``. The compression ratio is the model's dense bytes over
its bytes with every masked weight in its smallest layout (other tensors stay dense).

>>> import torch
>>> from torch import nn
>>> from prunelab.core.masks import Masks
>>> net = nn.Linear(100, 10, bias=False)
>>> mask = torch.zeros(10, 100, dtype=torch.bool)
>>> mask[:, :10] = True
>>> table = storage_table(net, Masks({"weight": mask}))
>>> table[["dense", "coo", "csr", "bitmask"]].iloc[0].tolist(), table.loc[0, "best"]
([4000, 2000, 1288, 525], 'bitmask')
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.apply import copy_model, masked_weights
from ..core.masks import Masks, check_masks
from ..core.targets import get_parameter
from ..runtime import torchfiles as _torchfiles
from ..runtime.checks import check_count
from ..runtime.files import atomic_write

__all__ = [
    "FORMAT",
    "LAYOUTS",
    "compression",
    "load_sparse",
    "save_sparse",
    "sparse_payload",
    "storage_table",
    "to_sparse",
]

LAYOUTS = ("coo", "csr", "bitmask")
FORMAT = "prunelab.sparse/1"
_INDEX_BYTES = 8  # torch.sparse indices are int64
_SCALE_BYTES = 4  # one float32 scale per quantized tensor


def _check(masks: object, bits: int | None = None) -> Masks:
    check_masks(masks)
    if bits is not None:  # None: no quantization
        check_count(bits, what="bits", maximum=16)
    return masks


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown sparse layout {layout!r}; accepted: {', '.join(LAYOUTS)}")
    return layout


def _sizes(shape: tuple[int, ...], nnz: int, value_bytes: int) -> dict[str, int]:
    numel = math.prod(shape)
    rows = shape[0] if shape else 1
    return {
        "dense": numel * value_bytes,
        "coo": nnz * (len(shape) * _INDEX_BYTES + value_bytes),
        "csr": (rows + 1) * _INDEX_BYTES + nnz * (_INDEX_BYTES + value_bytes),
        "bitmask": math.ceil(numel / 8) + nnz * value_bytes,
    }


def storage_table(model: nn.Module, masks: Masks, *, bits: int | None = None) -> pd.DataFrame:
    """Bytes of every masked weight in each layout, and the smallest choice.

    Args:
        model: The dense model; not modified.
        masks: The masks; every weight they cover gets a row.
        bits: Quantize the kept values to this many bits (1 to 16) for the ``quantized``
            column; None leaves the column out.

    Returns:
        A DataFrame with fqn, shape, numel, nnz, dense, coo, csr, bitmask (bytes), best
        (the smallest of dense/coo/csr/bitmask), best_bytes and, with ``bits``, quantized.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(8, 8, bias=False)
    >>> table = storage_table(net, Masks({"weight": torch.ones(8, 8, dtype=torch.bool)}))
    >>> table.loc[0, "best"], int(table.loc[0, "best_bytes"])
    ('dense', 256)
    """
    masks = _check(masks, bits)
    rows = []
    for fqn, mask in masks.items():
        weight = get_parameter(model, fqn)
        nnz = int(mask.sum())
        sizes = _sizes(tuple(weight.shape), nnz, weight.element_size())
        best = min(sizes, key=lambda k: (sizes[k], k != "dense"))
        row = {"fqn": fqn, "shape": tuple(weight.shape), "numel": weight.numel(), "nnz": nnz}
        row.update(sizes)
        row.update(best=best, best_bytes=sizes[best])
        if bits is not None:
            positions = min(sizes[k] - nnz * weight.element_size() for k in LAYOUTS)
            quantized = positions + math.ceil(nnz * bits / 8) + _SCALE_BYTES
            row["quantized"] = min(quantized, math.ceil(weight.numel() * bits / 8) + _SCALE_BYTES)
        rows.append(row)
    columns = [
        "fqn",
        "shape",
        "numel",
        "nnz",
        "dense",
        "coo",
        "csr",
        "bitmask",
        "best",
        "best_bytes",
    ]
    return pd.DataFrame(rows, columns=columns + (["quantized"] if bits is not None else []))


def _other_bytes(model: nn.Module, masked: set[str]) -> int:
    total = 0
    seen: set[int] = set()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if name in masked or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def compression(model: nn.Module, masks: Masks, *, bits: int | None = None) -> dict[str, float]:
    """Whole-model bytes: dense, each layout for the masked weights, the best mix, quantized.

    Tensors without a mask (biases, norms, unmasked layers) are counted dense everywhere.

    Returns:
        ``dense_bytes``; ``coo_bytes``, ``csr_bytes``, ``bitmask_bytes`` (every masked weight
        in that layout); ``best_bytes`` (each in its smallest layout); ``ratio`` (dense /
        best); with ``bits``, ``quantized_bytes`` and ``quantized_ratio``.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(100, 10, bias=False)
    >>> mask = torch.zeros(10, 100, dtype=torch.bool)
    >>> mask[:, :10] = True
    >>> round(compression(net, Masks({"weight": mask}))["ratio"], 2)
    7.62
    """
    table = storage_table(model, masks, bits=bits)
    other = _other_bytes(model, set(table["fqn"]))
    result: dict[str, float] = {"dense_bytes": other + int(table["dense"].sum())}
    for layout in LAYOUTS:
        result[f"{layout}_bytes"] = other + int(table[layout].sum())
    result["best_bytes"] = other + int(table["best_bytes"].sum())
    result["ratio"] = result["dense_bytes"] / max(result["best_bytes"], 1)
    if bits is not None:
        result["quantized_bytes"] = other + int(table["quantized"].sum())
        result["quantized_ratio"] = result["dense_bytes"] / max(result["quantized_bytes"], 1)
    return result


# -- real sparse tensors and files -----------------------------------------------------------


def _coo(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    indices = mask.nonzero().T.contiguous()
    return torch.sparse_coo_tensor(
        indices, weight[mask], weight.shape, is_coalesced=True, check_invariants=False
    )


def _csr(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = weight.shape[0]
    flat_w, flat_m = weight.reshape(rows, -1), mask.reshape(rows, -1)
    crow = torch.zeros(rows + 1, dtype=torch.long)
    crow[1:] = flat_m.sum(dim=1).cumsum(0)
    col = flat_m.nonzero()[:, 1].contiguous()
    with warnings.catch_warnings():  # "CSR support is in beta": nothing the user can act on
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, col, flat_w[flat_m], flat_w.shape, check_invariants=False
        )


def to_sparse(model: nn.Module, masks: Masks, *, layout: str = "coo") -> dict[str, torch.Tensor]:
    """Every masked weight as a real ``torch.sparse`` tensor holding exactly the kept values.

    Args:
        model: The dense model; not modified.
        masks: The masks.
        layout: ``"coo"`` (full shape) or ``"csr"`` (the 2-D view ``(out, rest)``, so
            ``to_dense().reshape(weight.shape)`` gives the masked weight back).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(3, 2, bias=False)
    >>> masks = Masks({"weight": torch.tensor([[True, False, False], [False, False, True]])})
    >>> sparse = to_sparse(net, masks)["weight"]
    >>> sparse.layout, sparse._nnz(), torch.equal(sparse.to_dense(), net.weight * masks["weight"])
    (torch.sparse_coo, 2, True)
    """
    masks = _check(masks)
    if layout not in ("coo", "csr"):
        raise ValueError(
            f"to_sparse makes torch.sparse tensors: layout 'coo' or 'csr', got {layout!r}"
        )
    build = _coo if layout == "coo" else _csr
    out = {}
    with torch.no_grad():
        for fqn, mask in masks.items():
            weight = get_parameter(model, fqn).detach().cpu()
            out[fqn] = build(weight * mask, mask)
    return out


def _components(weight: torch.Tensor, mask: torch.Tensor, layout: str) -> dict[str, torch.Tensor]:
    """Plain tensors (safe to load with weights_only) that hold one weight in ``layout``."""
    if layout == "coo":
        sparse = _coo(weight, mask)
        return {"indices": sparse.indices(), "values": sparse.values()}
    if layout == "csr":
        sparse = _csr(weight, mask)
        return {
            "crow_indices": sparse.crow_indices(),
            "col_indices": sparse.col_indices(),
            "values": sparse.values(),
        }
    bits = np.packbits(mask.reshape(-1).numpy())
    return {"bitmask": torch.from_numpy(bits), "values": weight[mask]}


def _from_components(parts: Mapping[str, torch.Tensor], shape: tuple, layout: str):
    """(dense weight, mask) back from :func:`_components`."""
    if layout == "coo":
        indices, values = parts["indices"], parts["values"]
        # a file may be corrupt: check the indices before using them
        dense = torch.sparse_coo_tensor(indices, values, shape, check_invariants=True).to_dense()
        mask = torch.zeros(shape, dtype=torch.bool)
        mask[tuple(indices)] = True
        return dense, mask
    if layout == "csr":
        rows = shape[0]
        flat = (rows, math.prod(shape) // rows if rows else 0)
        crow, col, values = parts["crow_indices"], parts["col_indices"], parts["values"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            csr = torch.sparse_csr_tensor(crow, col, values, flat, check_invariants=True)
        dense = csr.to_dense().reshape(shape)
        row_of = torch.repeat_interleave(torch.arange(rows), crow.diff())
        mask = torch.zeros(flat, dtype=torch.bool)
        mask[row_of, col] = True
        return dense, mask.reshape(shape)
    numel = math.prod(shape)
    mask = torch.from_numpy(np.unpackbits(parts["bitmask"].numpy(), count=numel).astype(bool))
    mask = mask.reshape(shape)
    dense = torch.zeros(shape, dtype=parts["values"].dtype)
    dense[mask] = parts["values"]
    return dense, mask


def sparse_payload(model: nn.Module, masks: Masks, *, layout: str = "bitmask") -> dict:
    """The checkpoint :func:`save_sparse` writes, as a dict of plain tensors."""
    masks = _check(masks)
    layout = _check_layout(layout)
    baked = {k: v.detach().cpu() for k, v in masked_weights(model, masks).items()}
    dense = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in masks}
    dense.update({k: v for k, v in baked.items() if k not in masks})
    sparse = {}
    for fqn, mask in masks.items():
        parts = _components(baked[fqn], mask, layout)
        sparse[fqn] = {"shape": torch.tensor(mask.shape, dtype=torch.long), **parts}
    return {"format": FORMAT, "layout": layout, "sparse": sparse, "dense": dense}


def save_sparse(
    model: nn.Module, masks: Masks, path: str | os.PathLike, *, layout: str = "bitmask"
) -> None:
    """Write the masked model as a sparse checkpoint (atomically: temp file, then rename).

    Masked weights are stored in ``layout`` (``"coo"``, ``"csr"`` or ``"bitmask"``) as plain
    tensors; everything else in the state_dict is stored dense, with masked biases zeroed.
    :func:`load_sparse` reads it back with ``weights_only=True``.
    """
    payload = sparse_payload(model, masks, layout=layout)
    with atomic_write(path) as handle:
        torch.save(payload, handle)


def load_sparse(path: str | os.PathLike | object, model: nn.Module) -> tuple[nn.Module, Masks]:
    """A copy of ``model`` (the architecture) with a sparse checkpoint's weights, and its masks.

    Args:
        path: A file written by :func:`save_sparse` (or a binary file object).
        model: A model of the same architecture; not modified.

    Returns:
        ``(masked model with zeros written in, the weights' masks)``.

    Raises:
        ValueError: A file that is not a prunelab sparse checkpoint or does not fit the model.
    """
    try:
        if isinstance(path, (str, os.PathLike)):
            payload = _torchfiles.read(path, "sparse checkpoint")
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a prunelab sparse checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a prunelab sparse checkpoint (no {FORMAT!r} tag)")
    layout = _check_layout(payload["layout"])
    state = dict(payload["dense"])
    found = {}
    for fqn, parts in payload["sparse"].items():
        shape = tuple(int(s) for s in parts["shape"])
        state[fqn], found[fqn] = _from_components(parts, shape, layout)
    restored = copy_model(model)
    try:
        restored.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the sparse checkpoint {path} does not fit this model: {exc}") from exc
    return restored, Masks(found)
