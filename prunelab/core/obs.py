"""SparseGPT's solver for one layer: the Hessian of its inputs and the blocked OBS update.

SparseGPT (Frantar & Alistarh, 2023) prunes a linear layer ``y = W x`` so that the pruned
``W'`` keeps ``W' X`` close to ``W X`` on calibration inputs ``X``. The squared error's Hessian
per output row is the same for all rows, ``H = 2 X^T X / n``. Columns are visited left to
right; when column ``j`` loses weights, the columns after it absorb the error with the
optimal-brain-surgeon (OBS) update ``W[:, j+1:] -= (w_j / [H_F^-1]_jj) [H_F^-1]_{j, j+1:}``,
where ``H_F`` is the Hessian of the columns not yet visited. That sequence of inverses is read
off one Cholesky factor: the upper factor ``U`` of ``H^-1`` has ``[H_F^-1]_{j, j:} = U_jj
U_{j, j:}``, so the update is ``W[:, j+1:] -= (w_j / U_jj) U_{j, j+1:}``.

Which weights are pruned is chosen adaptively: for every block of ``blocksize`` columns, at
the moment the block is reached (so with the updates of the blocks before it), by the OBS
saliency ``w^2 / [H_F^-1]_jj = w^2 / U_jj^2``, the lowest across the block; with an N:M
pattern, the lowest ``N`` of every ``M`` consecutive columns in each row, chosen when the
first of those columns is reached. The updates within a block are applied column by column to
the block and batched onto the columns after it ("lazy batch updates"), which gives the same
result as the unblocked sequence in exact arithmetic.
"""

from __future__ import annotations

import itertools

import torch

from .granularity import NM

__all__ = ["HessianSum", "solve_layer", "solver_dtype"]


def solver_dtype(device: torch.device) -> torch.dtype:
    """float64 on CPU: the Cholesky of a damped ``X^T X`` of a few thousand tokens loses too
    many digits in float32 there, and CPU float64 costs little. float32 on accelerators, as the
    paper's own code does (their float64 throughput is a fraction of float32's)."""
    return torch.float64 if device.type == "cpu" else torch.float32


class HessianSum:
    """Running ``X^T X`` over the rows of a layer's inputs, and the count of rows.

    >>> acc = HessianSum(3, device=torch.device("cpu"))
    >>> acc.add(torch.ones(2, 5, 3))
    >>> acc.hessian().diag().tolist()
    [2.0, 2.0, 2.0]
    """

    def __init__(self, columns: int, *, device: torch.device) -> None:
        self.dtype = solver_dtype(device)
        self.total = torch.zeros(columns, columns, dtype=self.dtype, device=device)
        self.rows = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a batch of inputs ``(..., columns)`` (every leading position is one row)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).to(self.total.device, self.dtype)
        self.total.addmm_(x.T, x)
        self.rows += x.shape[0]

    def hessian(self) -> torch.Tensor:
        """``H = 2 X^T X / n``."""
        if self.rows == 0:
            raise ValueError("no calibration inputs reached this layer")
        return self.total * (2.0 / self.rows)


def _prepared(
    rows: torch.Tensor, hessian: torch.Tensor, percdamp: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight with dead columns zeroed, and ``U``, the upper Cholesky factor of the damped
    ``H``'s inverse."""
    w = rows.clone()
    h = hessian.clone()
    # an input that is always zero carries no information: the paper zeroes its weights and
    # puts 1 on its diagonal so that H stays invertible
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(percdamp * h.diagonal().mean())
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        upper = torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as exc:
        raise ValueError(
            f"the inputs' Hessian is not positive definite even with percdamp={percdamp}; "
            "give more calibration data or a larger percdamp (e.g. 0.1)"
        ) from exc
    return w, upper


def _block_counts(sparsity: float, rows: int, columns: int, blocksize: int) -> list[int]:
    """Weights to prune in each block: the running total is rounded, so that the layer loses
    exactly ``round(sparsity * rows * columns)`` weights, each block its share."""
    bounds = [*range(0, columns, blocksize), columns]
    totals = [round(sparsity * rows * c) for c in bounds]  # as every strategy counts
    return [b - a for a, b in itertools.pairwise(totals)]


def solve_layer(
    rows: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float,
    pattern: NM | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune one layer's weight ``rows`` ``(out, in)`` and reconstruct the kept weights.

    Args:
        rows: The weight in ``Linear`` layout (one row per output), in the solver's dtype.
        hessian: ``2 X^T X / n`` of the layer's inputs, ``(in, in)``.
        sparsity: Fraction of weights to prune (ignored with a ``pattern``).
        pattern: An N:M pattern (:class:`~prunelab.core.granularity.NM`), or None for
            unstructured pruning.
        blocksize: Columns per block of mask selection and lazy updates (a multiple of M).
        percdamp: Dampening added to ``H``'s diagonal, as a fraction of its mean.

    Returns:
        ``(new_rows, keep)``: the reconstructed weight (zeros where pruned) and the bool mask
        of kept weights, both ``(out, in)``.

    >>> w, x = torch.randn(4, 8, dtype=torch.float64), torch.randn(32, 8, dtype=torch.float64)
    >>> new, keep = solve_layer(w, 2 * x.T @ x / 32, sparsity=0.5)
    >>> int(keep.sum()), bool((new[~keep] == 0).all())
    (16, True)
    """
    out_rows, columns = rows.shape
    if pattern is not None and (blocksize % pattern.m or columns % pattern.m):
        raise ValueError(
            f"{pattern} needs the inputs ({columns}) and blocksize ({blocksize}) to be "
            f"multiples of {pattern.m}"
        )
    w, upper = _prepared(rows, hessian.to(rows.dtype), percdamp)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    counts = None if pattern else _block_counts(sparsity, out_rows, columns, blocksize)
    for number, start in enumerate(range(0, columns, blocksize)):
        stop = min(start + blocksize, columns)
        # the block transposed: column i of the weight is row i here, contiguous in memory
        block = w[:, start:stop].T.contiguous()
        u = upper[start:stop, start:stop]
        diag = u.diagonal()
        drop = torch.zeros_like(block, dtype=torch.bool)
        if counts is not None and counts[number]:
            saliency = (block**2 / diag[:, None] ** 2).flatten()
            drop.view(-1)[torch.topk(saliency, counts[number], largest=False).indices] = True
        errors = torch.zeros_like(block)
        for i in range(stop - start):
            if pattern is not None and i % pattern.m == 0:
                group = block[i : i + pattern.m] ** 2 / diag[i : i + pattern.m, None] ** 2
                lowest = torch.topk(group, pattern.m - pattern.n, dim=0, largest=False).indices
                drop[i : i + pattern.m].scatter_(0, lowest, True)
            error = torch.where(drop[i], block[i], 0.0) / diag[i]
            block[i:].sub_(u[i, i:, None] * error[None, :])
            block[i].masked_fill_(drop[i], 0.0)
            errors[i] = error
        w[:, start:stop] = block.T
        w[:, stop:] -= errors.T @ upper[start:stop, stop:]
        pruned[:, start:stop] = drop.T
    return w, ~pruned
