"""Masks: which weights are kept, keyed by fully-qualified parameter name."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Set

import pandas as pd
import torch
from torch import nn

from ..runtime import torchfiles as _torchfiles
from ..runtime.files import atomic_write, one_line
from .targets import get_parameter

__all__ = ["Masks", "check_masks"]


class Masks(Mapping[str, torch.Tensor]):
    """Bool masks (True = kept) for target weights, plus masks they imply for other tensors.

    As a mapping it holds one mask per pruned weight, in the weight's full shape. ``coupled``
    holds masks derived from them that must be applied together, such as the bias entries of
    pruned output channels (so a pruned channel really outputs zero). Masks are CPU tensors
    and are never modified after construction.

    >>> m = Masks({"fc.weight": torch.tensor([[True, False], [False, False]])})
    >>> m.sparsity()
    0.75
    """

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor],
        *,
        coupled: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self._masks = {fqn: self._checked(fqn, m) for fqn, m in masks.items()}
        self._coupled = {fqn: self._checked(fqn, m) for fqn, m in (coupled or {}).items()}
        self._kept: dict[str, int] | None = None

    @staticmethod
    def _checked(fqn: str, mask: torch.Tensor) -> torch.Tensor:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask for {fqn!r} must be a bool tensor (True = kept)")
        return mask.detach().cpu()

    def __getitem__(self, fqn: str) -> torch.Tensor:
        return self._masks[fqn]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, sparsity={self.sparsity():.4f})"

    @property
    def coupled(self) -> Mapping[str, torch.Tensor]:
        """Masks implied for other tensors (biases of pruned output channels)."""
        return dict(self._coupled)

    def split(self, fqns: Set[str]) -> tuple[Masks, Masks]:
        """``(the masks of fqns, the rest)``, coupled masks sorted the same way (each part
        shrinks by its own route).

        >>> kept = torch.ones(2, dtype=torch.bool)
        >>> a, b = Masks({"x": kept, "y": kept}).split({"x"})
        >>> list(a), list(b)
        (['x'], ['y'])
        """

        def part(inside: bool) -> Masks:
            return Masks(
                {f: m for f, m in self._masks.items() if (f in fqns) is inside},
                coupled={f: m for f, m in self._coupled.items() if (f in fqns) is inside},
            )

        return part(True), part(False)

    @property
    def weights(self) -> Mapping[str, torch.Tensor]:
        """New values for masked tensors, used instead of the model's own: none for masks
        that only select; SparseGPT's :class:`~prunelab.core.sparsegpt.Reconstructed` has
        them."""
        return {}

    def write_into(self, model: nn.Module) -> None:
        """Copy :attr:`weights` into ``model``'s parameters, in place (nothing for masks that
        only select): for a copy about to be masked or trained, which would otherwise mask
        the dense weights and throw a reconstruction away.

        Raises:
            ValueError: If a new weight's shape differs from the model's tensor.
        """
        with torch.no_grad():
            for fqn, value in self.weights.items():
                param = get_parameter(model, fqn)
                if tuple(param.shape) != tuple(value.shape):
                    raise ValueError(
                        f"new weight for {fqn!r} has shape {tuple(value.shape)}, the tensor "
                        f"{tuple(param.shape)}"
                    )
                param.copy_(value.to(param.device, param.dtype))

    def all(self) -> dict[str, torch.Tensor]:
        """Every mask to apply: target weights and coupled tensors."""
        return {**self._masks, **self._coupled}

    def _kept_counts(self) -> dict[str, int]:
        # masks never change after construction, so each is counted once, however many
        # summaries (sparsity, table, FLOPs, recipe) a page draws from them
        if self._kept is None:
            self._kept = {fqn: int(mask.sum()) for fqn, mask in self._masks.items()}
        return self._kept

    def kept_counts(self) -> dict[str, int]:
        """Kept (True) elements of each target weight's mask, by fqn (counted once)."""
        return dict(self._kept_counts())

    def sparsity(self) -> float:
        """Overall fraction of target elements zeroed (weighted by element count)."""
        total = sum(m.numel() for m in self._masks.values())
        kept = sum(self._kept_counts().values())
        return 1.0 - kept / total if total else 0.0

    def per_layer(self) -> pd.DataFrame:
        """One row per masked weight: fqn, shape, elements, kept, sparsity, empty.

        ``empty`` flags layers with nothing kept, which output only their bias (or zero).
        """
        rows = []
        for fqn, mask in self._masks.items():
            kept = self._kept_counts()[fqn]
            rows.append(
                {
                    "fqn": fqn,
                    "shape": tuple(mask.shape),
                    "elements": mask.numel(),
                    "kept": kept,
                    "sparsity": 1.0 - kept / mask.numel() if mask.numel() else 0.0,
                    "empty": kept == 0,
                }
            )
        columns = ["fqn", "shape", "elements", "kept", "sparsity", "empty"]
        return pd.DataFrame(rows, columns=columns)

    def overlap(self, other: Masks) -> pd.DataFrame:
        """Per common layer, how the kept sets of two mask sets agree.

        Returns a DataFrame with fqn, kept_self, kept_other, kept_both and iou
        (intersection over union of the kept sets; 1.0 when both keep nothing).
        """
        if not isinstance(other, Masks):
            raise TypeError(f"overlap needs another Masks, got {type(other).__name__}")
        rows = []
        for fqn in self._masks.keys() & other._masks.keys():
            a, b = self._masks[fqn], other._masks[fqn]
            if a.shape != b.shape:
                raise ValueError(f"masks for {fqn!r} differ in shape: {a.shape} vs {b.shape}")
            both, either = int((a & b).sum()), int((a | b).sum())
            rows.append(
                {
                    "fqn": fqn,
                    "kept_self": int(a.sum()),
                    "kept_other": int(b.sum()),
                    "kept_both": both,
                    "iou": both / either if either else 1.0,
                }
            )
        order = {fqn: i for i, fqn in enumerate(self._masks)}
        rows.sort(key=lambda row: order[row["fqn"]])
        return pd.DataFrame(rows, columns=["fqn", "kept_self", "kept_other", "kept_both", "iou"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the masks with ``torch.save``; atomically (temp file, then rename)."""
        with atomic_write(path) as handle:
            torch.save(self._payload(), handle)

    def _payload(self) -> dict[str, object]:
        # what save writes; a subclass adds its own entries (SparseGPT's new weights)
        return {"format": "prunelab.masks/1", "masks": self._masks, "coupled": self._coupled}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Masks:
        """Read masks written by :meth:`save` (safe loading: tensors only)."""
        try:
            payload = _torchfiles.read(path, "masks file")
        except FileNotFoundError:
            raise
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path} is not a prunelab masks file: it holds pickled Python objects, not "
                "only tensors (masks files are never unpickled)"
            ) from exc
        except Exception as exc:
            raise ValueError(f"{path} is not a prunelab masks file: {one_line(exc)}") from exc
        if not isinstance(payload, dict) or payload.get("format") != "prunelab.masks/1":
            raise ValueError(f"{path} is not a prunelab masks file (no 'prunelab.masks/1' tag)")
        masks, coupled = payload.get("masks"), payload.get("coupled")
        if not isinstance(masks, Mapping) or not isinstance(coupled, (Mapping, type(None))):
            raise ValueError(
                f"{path} is not a valid prunelab masks file: 'masks' (and 'coupled') must map "
                "parameter names to bool tensors"
            )
        return cls(masks, coupled=coupled)


def check_masks(masks: object, *, optional: bool = False, what: str = "masks") -> Masks | None:
    """``masks`` if it is a :class:`Masks` (or None where ``optional``), else a clear TypeError.

    >>> check_masks({"w": torch.ones(2, dtype=torch.bool)})
    Traceback (most recent call last):
    ...
    TypeError: masks must be prunelab.Masks, got dict
    """
    if isinstance(masks, Masks) or (optional and masks is None):
        return masks
    accepted = "prunelab.Masks or None" if optional else "prunelab.Masks"
    raise TypeError(f"{what} must be {accepted}, got {type(masks).__name__}")
