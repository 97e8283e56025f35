"""Data-driven statistics for pruning criteria, computed once and cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.batches import Batch, iter_batches
from ..runtime.functional import check_device, functional_forward, structural_copy
from ..runtime.hooks import ChannelMoments, channel_axis, first_tensor, forward_hooks
from ..runtime.metrics import check_labels, model_input_errors
from .targets import Target, get_parameter, targets

__all__ = ["Calibration", "activations_visible"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def activations_visible(target: Target, *, output: bool = False) -> bool:
    """Whether hooks on ``target``'s module see the activations feeding (or leaving) it.

    Recurrent modules hide theirs: only the first layer's input reaches the module from
    outside, and the outputs of the gates are internal. Strategies ask this to say which
    targets they can score (:meth:`prunelab.core.strategies.Strategy.unsupported`).
    """
    if target.module_type in ("RNN", "LSTM", "GRU"):
        return not output and target.param_name.startswith("weight_ih_l0")
    return True


class Calibration:
    """Gradients and activation norms of a model on a few batches, computed lazily, once.

    Data-driven criteria (magnitude x gradient, activation x magnitude, activation-norm
    channels) read their statistics from here, so one calibration object can serve several
    strategies. The model is never modified: gradients are taken with ``torch.autograd.grad``
    through ``functional_call`` (no ``.grad`` is written), and the hooks are always removed.

    Args:
        model: The dense model.
        data: Calibration data in any form :func:`prunelab.runtime.batches.iter_batches` accepts.
            Labels are needed only for gradients.
        batches: How many batches to use.
        batch_size: Batch size when ``data`` is not already batched.
        device: Where to run the forward passes (default: where the model is).
        loss_fn: ``loss_fn(outputs, labels)`` for gradients; default cross-entropy.

    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> cal = Calibration(net, (torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])))
    >>> cal.input_norm("0.weight").shape, cal.gradient("0.weight").shape
    (torch.Size([4]), torch.Size([3, 4]))
    """

    def __init__(
        self,
        model: nn.Module,
        data: object,
        *,
        batches: int = 4,
        batch_size: int = 128,
        device: torch.device | str | None = None,
        loss_fn: LossFn | None = None,
    ) -> None:
        if batches < 1:
            raise ValueError(f"batches must be at least 1, got {batches}")
        self.model = model
        self.device = None if device is None else check_device(device)
        self._data = data
        self._limit = batches
        self._batch_size = batch_size
        self._loss_fn = loss_fn or F.cross_entropy
        self._batches: list[Batch] | None = None
        self._gradients: dict[str, torch.Tensor] | None = None
        self._inputs: dict[str, torch.Tensor] | None = None
        self._outputs: dict[str, torch.Tensor] | None = None
        self._targets = {t.fqn: t for t in targets(model)}

    def batches(self) -> list[Batch]:
        """The calibration batches (read from ``data`` on first use, then kept)."""
        if self._batches is None:
            self._batches = list(
                iter_batches(self._data, batch_size=self._batch_size, limit=self._limit)
            )
            if not self._batches:
                raise ValueError("calibration data is empty")
        return self._batches

    # -- gradients ------------------------------------------------------------------------

    def gradients(self) -> dict[str, torch.Tensor]:
        """Gradient of the loss w.r.t. every target weight, summed over the batches."""
        if self._gradients is None:
            self._gradients = self._compute_gradients()
        return self._gradients

    def gradient(self, fqn: str) -> torch.Tensor:
        """Summed gradient of one target weight."""
        return self._lookup(self.gradients(), fqn, "gradient")

    def _compute_gradients(self) -> dict[str, torch.Tensor]:
        totals: dict[str, torch.Tensor] = {}
        for grads in self.batch_gradients(list(self._targets)):
            for fqn, grad in grads.items():
                totals[fqn] = totals[fqn] + grad if fqn in totals else grad.clone()
        return {fqn: g.cpu() for fqn, g in totals.items()}

    def batch_gradients(self, fqns: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        """Gradient of the loss w.r.t. the parameters ``fqns`` (any, not only targets), one
        ``{fqn: gradient}`` per batch, on the device the batches run on.

        The loss is the model's mean loss on the batch: cross-entropy over samples for a
        classifier, over tokens whose label is not -100 for a language model (as
        :mod:`prunelab.runtime.metrics` counts ``loss``), or ``loss_fn``. A tensor the loss
        does not reach gets zeros. Criteria that need one gradient per batch (the
        :func:`prunelab.core.head_scores.head_taylor_importance` sum of ``|dL/dgate|``) read
        it here rather than :meth:`gradients`, the sum.

        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> cal = Calibration(net, (torch.randn(8, 4), torch.zeros(8, dtype=torch.long)),
        ...                   batch_size=4)
        >>> [g["0.bias"].shape for g in cal.batch_gradients(["0.bias"])]
        [torch.Size([3]), torch.Size([3])]
        """
        # get_parameter, not named_parameters(): that names a tied weight after its first
        # owner, which need not be the prunable module its target is named after
        weights = {fqn: get_parameter(self.model, fqn).detach() for fqn in fqns}
        leaves = {fqn: w.to(self.device or w.device).requires_grad_() for fqn, w in weights.items()}
        for batch in self.batches():
            if batch.labels is None:
                raise ValueError(
                    "gradient-based criteria need labelled calibration data: give "
                    "(inputs, labels) batches"
                )
            batch = batch.to(self.device)
            with torch.enable_grad():
                with model_input_errors(batch.inputs):
                    out = functional_forward(self.model, leaves, batch.inputs, device=self.device)
                logits = first_tensor(out)
                if logits is None and isinstance(out, dict):  # a Hugging Face ModelOutput
                    logits = out.get("logits")
                if logits is None:
                    raise TypeError("the model's output is not a tensor; cannot compute a loss")
                labels = batch.labels
                if self._loss_fn is F.cross_entropy and logits.ndim == 2:
                    labels = check_labels(labels, logits)
                elif self._loss_fn is F.cross_entropy and logits.ndim == 3:  # a language model
                    logits, labels = logits.flatten(0, 1), labels.reshape(-1)  # -100 ignored
                loss = self._loss_fn(logits, labels)
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
            yield {
                fqn: torch.zeros_like(leaf) if grad is None else grad.detach()
                for (fqn, leaf), grad in zip(leaves.items(), grads, strict=True)
            }

    # -- activations ----------------------------------------------------------------------

    def input_norms(self) -> dict[str, torch.Tensor]:
        """Per target: L2 norm of each input feature/channel over all calibration positions."""
        if self._inputs is None:
            self._collect_activations()
        assert self._inputs is not None
        return self._inputs

    def output_norms(self) -> dict[str, torch.Tensor]:
        """Per target: L2 norm of each output channel over all calibration positions."""
        if self._outputs is None:
            self._collect_activations()
        assert self._outputs is not None
        return self._outputs

    def input_norm(self, fqn: str) -> torch.Tensor:
        """Norms of the input features of one target weight, ``||x_j||_2``."""
        return self._lookup(self.input_norms(), fqn, "input activation norm")

    def output_norm(self, fqn: str) -> torch.Tensor:
        """Norms of the output channels of one target weight."""
        return self._lookup(self.output_norms(), fqn, "output activation norm")

    def _collect_activations(self) -> None:
        inputs: dict[str, ChannelMoments] = {}
        outputs: dict[str, ChannelMoments] = {}
        hooks = {}
        for module_fqn in {t.module_fqn for t in self._targets.values()}:
            module = self.model.get_submodule(module_fqn)
            inputs[module_fqn], outputs[module_fqn] = ChannelMoments(), ChannelMoments()
            hooks[module_fqn] = self._recorder(module, inputs[module_fqn], outputs[module_fqn])
        # the hooks sit on a structural copy: forwards of other threads on the same (shared)
        # model must neither run them nor feed them their activations
        shell = structural_copy(self.model)
        with torch.no_grad(), forward_hooks(shell, hooks):
            for batch in self.batches():
                with model_input_errors(batch.inputs):
                    functional_forward(shell, {}, batch.inputs, device=self.device, private=True)
        self._inputs, self._outputs = {}, {}
        for fqn, target in self._targets.items():
            self._store(self._inputs, fqn, target, inputs[target.module_fqn], output=False)
            self._store(self._outputs, fqn, target, outputs[target.module_fqn], output=True)

    @staticmethod
    def _recorder(module: nn.Module, ins: ChannelMoments, outs: ChannelMoments):
        axis = channel_axis(module)

        def record(mod: nn.Module, args: tuple, output: object) -> None:
            if (x := first_tensor(args)) is not None:
                ins.update(x, axis=axis)
            if not isinstance(mod, nn.RNNBase) and (y := first_tensor(output)) is not None:
                outs.update(y, axis=axis)

        return record

    @staticmethod
    def _store(
        table: dict[str, torch.Tensor],
        fqn: str,
        target: Target,
        moments: ChannelMoments,
        *,
        output: bool,
    ) -> None:
        if not activations_visible(target, output=output):
            return
        if moments.count == 0:
            return
        # Input norms of a grouped conv cover all its input channels (groups x weight dim 1).
        size = target.shape[target.out_dim] if output else target.shape[target.in_dim]
        if not output and target.in_dim == 1:
            size *= target.groups
        norms = moments.norm()
        if norms.shape[0] == size:
            table[fqn] = norms

    def _lookup(self, table: dict[str, torch.Tensor], fqn: str, what: str) -> torch.Tensor:
        if fqn not in self._targets:
            raise ValueError(f"{fqn!r} is not a prunable tensor of the calibrated model")
        if fqn not in table:
            raise ValueError(
                f"no {what} for {fqn!r}: the calibration data did not reach it or its "
                f"{what} is internal to a {self._targets[fqn].module_type} module; "
                "exclude it or use a weight-only strategy"
            )
        return table[fqn]
