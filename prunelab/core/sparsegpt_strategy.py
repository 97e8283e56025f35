"""The ``sparsegpt`` strategy: SparseGPT reached through :func:`prunelab.prune` and :class:`Pruner`.

``prunelab.prune(model, "sparsegpt", sparsity=0.5, calibration=prunelab.Calibration(model,
data))`` returns a :class:`~prunelab.core.sparsegpt.Reconstructed`: masks plus the NEW WEIGHTS
SparseGPT wrote into the kept positions, which :func:`prunelab.evaluate`, ``masked_forward`` and
``apply`` use. Each request for masks at a new sparsity runs the solver again (the result of the
last request is kept), so a sweep over sparsities costs one SparseGPT run per point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from .granularity import NM, UNSTRUCTURED, Granularity, parse_granularity
from .masks import Masks
from .options import NM_PATTERNS, Option
from .selection import Layer, Selection
from .sparsegpt import Reconstructed, SparseGPTConfig, reconstruct, reconstructable
from .strategies import Strategy, register_strategy
from .targets import Target

__all__ = ["ReconstructingSelection", "SparseGPT"]


@register_strategy("sparsegpt")
@dataclass(frozen=True)
class SparseGPT(Strategy):
    """SparseGPT: prune each linear layer and rewrite its kept weights (new weights + masks).

    Second-order, layer by layer on calibration inputs (Frantar & Alistarh, 2023); see
    :mod:`prunelab.core.obs` for the solver and :mod:`prunelab.core.sparsegpt` for the order.

    Args:
        granularity: ``"unstructured"`` or an N:M pattern such as ``"2:4"``.
        blocksize: Columns per block of mask selection (the paper's 128).
        percdamp: Dampening of the Hessian's diagonal, as a fraction of its mean.
        sequential: ``"block"`` (the layers of a block share one pass, as the paper) or
            ``"layer"`` (each layer sees the pruned outputs of all layers before it).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"activations"})
    granularity: Granularity | str = field(
        default=UNSTRUCTURED,
        metadata={"option": Option("Pattern", choices=("unstructured", *NM_PATTERNS))},
    )
    blocksize: int = field(
        default=128, metadata={"option": Option("Block size", choices=(32, 64, 128, 256))}
    )
    percdamp: float = field(
        default=0.01,
        metadata={
            "option": Option(
                "Dampening", low=0.0, high=1.0, step=0.01, help="Added to H's diagonal, x mean."
            )
        },
    )
    sequential: str = field(
        default="block", metadata={"option": Option("Sequential", choices=("block", "layer"))}
    )

    def __post_init__(self) -> None:
        granularity = parse_granularity(self.granularity)
        if granularity is not UNSTRUCTURED and not isinstance(granularity, NM):
            raise ValueError(f"sparsegpt prunes unstructured or N:M, got {granularity}")
        object.__setattr__(self, "granularity", granularity)
        self.config()  # checks the solver's options

    def config(self) -> SparseGPTConfig:
        """The solver's options."""
        return SparseGPTConfig(
            blocksize=self.blocksize, percdamp=self.percdamp, sequential=self.sequential
        )

    def unsupported(self, target: Target) -> str | None:
        return reconstructable(target) or super().unsupported(target)

    def prepare(self, layers: Sequence[Layer]) -> Selection:
        return ReconstructingSelection(self, layers)


class ReconstructingSelection(Selection):
    """Answers mask requests by running SparseGPT; :meth:`result` adds its new weights."""

    def __init__(self, strategy: SparseGPT, layers: Sequence[Layer]) -> None:
        calibration = layers[0].calibration if layers else None
        if calibration is None:
            raise ValueError(
                "sparsegpt needs calibration inputs: pass "
                "calibration=prunelab.Calibration(model, data)"
            )
        self._strategy = strategy
        self._calibration = calibration
        self._targets = [layer.target for layer in layers]
        self._last: tuple[tuple, Reconstructed] | None = None

    def masks(self, *, sparsity, threshold, per_layer):
        if threshold is not None:
            raise ValueError("sparsegpt selects by sparsity only, not by a threshold")
        pattern = self._strategy.granularity
        pattern = pattern if isinstance(pattern, NM) else None
        default = pattern.sparsity if pattern is not None and sparsity is None else sparsity
        values = {t.fqn: float(per_layer.get(t.fqn, default)) for t in self._targets}
        if pattern is not None:
            bad = {f: v for f, v in values.items() if v and abs(v - pattern.sparsity) > 1e-9}
            if bad:
                raise ValueError(
                    f"{pattern} gives sparsity {pattern.sparsity:g}; per-layer sparsities must "
                    f"be 0 or that, got {bad}"
                )
        key = tuple(sorted(values.items()))
        if self._last is None or self._last[0] != key:
            cal = self._calibration
            batches = [batch.inputs for batch in cal.batches()]
            result = reconstruct(
                cal.model,
                batches,
                self._targets,
                sparsity=values,
                pattern=pattern,
                config=self._strategy.config(),
                device=cal.device,
            )
            self._last = (key, result)
        return dict(self._last[1])

    def result(self, masks: Masks) -> Reconstructed:
        """``masks`` (from the last :meth:`masks` request) with SparseGPT's new weights."""
        assert self._last is not None, "masks() comes first"
        weights = {f: w for f, w in self._last[1].weights.items() if f in masks}
        return Reconstructed(dict(masks), weights=weights, coupled=masks.coupled)
