"""SparseGPT on a whole model: new weights plus masks, layer by layer on calibration inputs.

Unlike every other strategy, SparseGPT changes the weights it keeps (see :mod:`.obs`): its
result is a :class:`Reconstructed`, which is a :class:`~prunelab.core.masks.Masks` that also
carries the new weights. :func:`prunelab.masked_forward`, :func:`prunelab.evaluate` and
:func:`prunelab.apply` use those weights wherever they use its masks; the model given is never
changed.

Layers are pruned in the order the model calls them, and each one's inputs are computed
through the layers already pruned, as in the paper. prunelab does this for any model, not only
for a stack of transformer blocks: it runs the whole model with the pruned weights swapped in
through ``functional_call`` and stops the forward pass as soon as the layers being pruned have
seen their inputs. Layers are taken in groups (``sequential="block"``, the default): the
targets of one numbered block (``transformer.h.3.*``, ``layers.0.*``) share one pass and see
the block's dense inputs, which is the paper's own procedure (it prunes q, k, v, o, fc1 and fc2
of a block from one pass through it); ``sequential="layer"`` gives every layer its own pass, so
fc2 sees the pruned fc1. A pass reruns the model's prefix: for ``L`` blocks about ``L^2 / 2``
block-forwards on the calibration batches instead of the paper's ``L`` (which needs the blocks'
call signature, model by model); for the models prunelab is used on, the solver dominates.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..runtime import torchfiles
from ..runtime.functional import functional_forward, run_device, structural_copy
from ..runtime.hooks import first_tensor, forward_hooks
from ..runtime.metrics import model_input_errors
from .granularity import NM
from .masks import Masks
from .obs import HessianSum, solve_layer, solver_dtype
from .targets import Target, get_parameter

__all__ = ["Reconstructed", "SparseGPTConfig", "linear_rows", "reconstruct", "reconstructable"]

# the modules whose weight is a matrix applied to the last dim of their input: nn.Linear and
# Hugging Face's GPT-2 Conv1D (its weight stored transposed, (in, out))
LINEAR_TYPES = ("Linear", "Conv1D")


def reconstructable(target: Target) -> str | None:
    """Why SparseGPT cannot reconstruct ``target``, or None when it can."""
    if target.module_type not in LINEAR_TYPES or len(target.shape) != 2:
        return (
            f"SparseGPT reconstructs linear layers (Linear, GPT-2's Conv1D); {target.fqn} is "
            f"a {target.module_type}"
        )
    return None


def linear_rows(weight: torch.Tensor, target: Target) -> torch.Tensor:
    """``weight`` in Linear layout ``(out, in)``: a Conv1D's ``(in, out)`` weight transposed.

    The one place that knows the layouts (the target's ``out_dim`` says which it is); the
    transpose is its own inverse, so the same call turns solved rows back.
    """
    return weight if target.out_dim == 0 else weight.transpose(0, 1)


@dataclass(frozen=True)
class SparseGPTConfig:
    """How SparseGPT solves (the paper's defaults).

    Attributes:
        blocksize: Columns per block of adaptive mask selection and lazy updates.
        percdamp: Dampening of the Hessian's diagonal, as a fraction of its mean.
        sequential: ``"block"``: the layers of one numbered block share a pass (the paper's
            way); ``"layer"``: each layer's inputs go through every layer pruned before it.
    """

    blocksize: int = 128
    percdamp: float = 0.01
    sequential: str = "block"

    def __post_init__(self) -> None:
        if not isinstance(self.blocksize, int) or self.blocksize < 1:
            raise ValueError(f"blocksize must be a positive integer, got {self.blocksize!r}")
        if not 0 <= self.percdamp <= 10:
            raise ValueError(f"percdamp must be in [0, 10], got {self.percdamp!r}")
        if self.sequential not in ("block", "layer"):
            raise ValueError(f"sequential must be 'block' or 'layer', got {self.sequential!r}")


class Reconstructed(Masks):
    """SparseGPT's result: NEW WEIGHTS plus masks.

    It is a :class:`~prunelab.core.masks.Masks` (so sparsity, tables and recipes read it as
    any masks), and :attr:`weights` holds the reconstructed weight of every pruned layer, in the
    parameter's own layout and dtype, zero where pruned. :func:`prunelab.masked_forward`,
    :func:`prunelab.evaluate` and :func:`prunelab.apply` use these weights; the masks alone
    (:meth:`masks`, or ``Masks.save``) describe only which weights were dropped.

    >>> r = Reconstructed({"w": torch.tensor([True, False])}, weights={"w": torch.tensor([2.0, 0])})
    >>> r.sparsity(), r.weights["w"].tolist()
    (0.5, [2.0, 0.0])
    """

    def __init__(
        self,
        masks: Mapping[str, torch.Tensor],
        *,
        weights: Mapping[str, torch.Tensor],
        coupled: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__(masks, coupled=coupled)
        unknown = [fqn for fqn in weights if fqn not in self]
        if unknown:
            raise ValueError(f"weights given for tensors without a mask: {unknown[:3]}")
        for fqn, value in weights.items():
            if tuple(value.shape) != tuple(self[fqn].shape):
                raise ValueError(f"weight for {fqn!r} has shape {tuple(value.shape)}")
        self._weights = {fqn: w.detach().cpu() for fqn, w in weights.items()}

    def __repr__(self) -> str:
        return f"Reconstructed({len(self)} tensors, sparsity={self.sparsity():.4f}, new weights)"

    @property
    def weights(self) -> Mapping[str, torch.Tensor]:
        """``{fqn: reconstructed weight}`` of the layers SparseGPT rewrote."""
        return dict(self._weights)

    def masks(self) -> Masks:
        """The masks alone, without the new weights."""
        return Masks(dict(self), coupled=self.coupled)

    def _payload(self) -> dict[str, object]:
        # Masks.save writes it: masks and new weights, so that Masks.load reads the masks of
        # the file and load() both
        return {**super()._payload(), "weights": self._weights}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Reconstructed:
        """Read what :meth:`save` wrote (safe loading: tensors only)."""
        masks = Masks.load(path)
        weights = torchfiles.read(path, "masks file").get("weights")
        if not isinstance(weights, Mapping):
            raise ValueError(f"{path} holds masks without SparseGPT's weights: use Masks.load")
        return cls(dict(masks), weights=weights, coupled=masks.coupled)

    def apply(self, model: nn.Module) -> nn.Module:
        """A pruned copy of ``model`` with the new weights and masks (:func:`prunelab.apply`)."""
        from .apply import apply

        return apply(model, self)


def _block_key(module_fqn: str, sequential: str) -> str:
    if sequential == "layer":
        return module_fqn
    # the first numbered component names the block: "transformer.h.3.attn.c_attn" -> ".h.3"
    found = re.match(r"^(.*?(?:^|\.)\d+)(?:\.|$)", module_fqn)
    return found.group(1) if found else module_fqn


class _Reached(Exception):
    """Raised by a hook once the layers being pruned have seen their inputs."""


def _call_order(shell: nn.Module, modules: Sequence[str], batch: object, device) -> list[str]:
    order: list[str] = []

    def seen(name: str):
        def hook(module, args, output):
            if name not in order:
                order.append(name)

        return hook

    with forward_hooks(shell, {m: seen(m) for m in modules}), model_input_errors(batch):
        functional_forward(shell, {}, batch, device=device, private=True)
    missing = [m for m in modules if m not in order]
    if missing:
        raise ValueError(
            f"the calibration data never reached {missing[:3]} (a module whose weight another "
            "module uses directly cannot be reconstructed); leave them out with targets=..."
        )
    return order


def reconstruct(
    model: nn.Module,
    batches: Sequence[object],
    targets: Sequence[Target],
    *,
    sparsity: Mapping[str, float],
    pattern: NM | None = None,
    config: SparseGPTConfig = SparseGPTConfig(),
    device: torch.device | str | None = None,
) -> Reconstructed:
    """SparseGPT on ``model``'s ``targets``: each layer pruned and its kept weights rewritten.

    Args:
        model: The dense model (not modified).
        batches: Calibration inputs (tensors the model takes; one forward pass each).
        targets: The linear layers to prune (:func:`reconstructable`).
        sparsity: ``{fqn: fraction pruned}`` for each target (0 leaves it as it is); with a
            ``pattern`` each value is 0 or the pattern's sparsity.
        pattern: An N:M pattern, or None for unstructured pruning.
        config: Block size, dampening and how sequential (:class:`SparseGPTConfig`).
        device: Where to run and solve (default: where the model is).

    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> from prunelab.core.targets import targets
    >>> found = targets(net)
    >>> r = reconstruct(net, [torch.randn(64, 8)], found, sparsity=dict.fromkeys(
    ...     [t.fqn for t in found], 0.5))
    >>> round(r.sparsity(), 2), sorted(r.weights)
    (0.5, ['0.weight', '2.weight'])
    """
    run_on = run_device(model, device)
    for target in targets:
        if (why := reconstructable(target)) is not None:
            raise ValueError(why)
    if not batches:
        raise ValueError("SparseGPT needs calibration data: no batches given")
    by_module = {t.module_fqn: t for t in targets}
    # the copy has its own module dicts: eval mode (no dropout) there leaves ``model`` alone
    shell = structural_copy(model).eval()
    order = _call_order(shell, list(by_module), batches[0], run_on)
    groups: list[list[str]] = []
    for name in order:
        if groups and _block_key(groups[-1][0], config.sequential) == _block_key(
            name, config.sequential
        ):
            groups[-1].append(name)
        else:
            groups.append([name])
    weights: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    overrides: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for group in groups:
            pruned = [name for name in group if sparsity.get(by_module[name].fqn, 0.0)]
            for name in group:
                if name not in pruned:  # left as it is: no pass, no copy of its weight
                    masks[by_module[name].fqn] = torch.ones(by_module[name].shape, dtype=torch.bool)
            if not pruned:
                continue
            group = pruned
            sums = _hessians(shell, group, by_module, batches, overrides, run_on)
            for name in group:
                target = by_module[name]
                new, keep = _solve(model, target, sums[name], sparsity, pattern, config, run_on)
                weights[target.fqn], masks[target.fqn] = new.cpu(), keep.cpu()
                # the solver leaves zeros where it pruned: on CPU this is the same tensor
                overrides[target.fqn] = new.to(run_on)
    return Reconstructed(masks, weights=weights)


def _hessians(
    shell: nn.Module,
    group: list[str],
    by_module: Mapping[str, Target],
    batches: Sequence[object],
    overrides: Mapping[str, torch.Tensor],
    device: torch.device,
) -> dict[str, HessianSum]:
    sums = {
        name: HessianSum(linear_rows_shape(by_module[name])[1], device=device) for name in group
    }
    last = group[-1]

    def record(name: str):
        def hook(module, args, output):
            if (x := first_tensor(args)) is not None:
                sums[name].add(x)
            if name == last:
                raise _Reached  # the rest of the model is not needed for this group

        return hook

    with forward_hooks(shell, {name: record(name) for name in group}):
        for batch in batches:
            with contextlib.suppress(_Reached):
                functional_forward(shell, overrides, batch, device=device, private=True)
    return sums


def linear_rows_shape(target: Target) -> tuple[int, int]:
    """``(out, in)`` of ``target`` in Linear layout."""
    return target.shape if target.out_dim == 0 else (target.shape[1], target.shape[0])


def _solve(
    model: nn.Module,
    target: Target,
    hessian: HessianSum,
    sparsity: Mapping[str, float],
    pattern: NM | None,
    config: SparseGPTConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = get_parameter(model, target.fqn).detach()
    value = sparsity[target.fqn]
    rows = linear_rows(weight, target).to(device, solver_dtype(device))
    solved, keep = solve_layer(
        rows,
        hessian.hessian(),
        sparsity=value,
        pattern=pattern,
        blocksize=config.blocksize,
        percdamp=config.percdamp,
    )
    return linear_rows(solved, target).to(weight.dtype), linear_rows(keep, target)
