"""Thresholding activations at inference: zero the small values that flow between layers.

:func:`activation_threshold` zeroes ``|value| < threshold`` in named layers of a copy of the
model for a ``with`` block and counts the sparsity it makes; :class:`ThresholdActivation`
builds the same into a model for export; :func:`activation_sparsity_effect` measures what a
threshold does to the outputs, counted as every evaluation counts them
(:mod:`prunelab.runtime.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import pandas as pd
import torch
from torch import nn

from ..core.apply import copy_model, masked_weights
from ..core.masks import Masks, check_masks
from ..runtime.batches import iter_batches
from ..runtime.checks import check_number
from ..runtime.functional import run_device, tensors_on
from ..runtime.hooks import first_tensor, forward_hooks, replace_first
from ..runtime.metrics import MetricTotals, accumulate, accumulate_batch, batch_logits, summarize
from .layers import _observe, _Point, _points

__all__ = [
    "ThresholdActivation",
    "ThresholdedModel",
    "activation_sparsity_effect",
    "activation_threshold",
]

_METRICS = ("accuracy", "agreement", "kl")  # what the thresholded outputs are compared by


def _zero_below(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    return tensor.masked_fill(tensor.abs() < threshold, 0)


class ThresholdActivation(nn.Module):
    """Wraps a module and zeroes the values of its output with ``|value| < threshold``.

    For exporting a model with activation thresholding built in. For a module returning a
    tuple (LSTM), the first tensor is thresholded. Note that wrapping moves the module's
    parameters one level down (``fc.weight`` becomes ``fc.module.weight``).

    Args:
        module: The module whose output is thresholded.
        threshold: Values with a smaller magnitude become 0.

    >>> net = nn.Sequential(nn.Identity())
    >>> net[0] = ThresholdActivation(net[0], threshold=0.5)
    >>> net(torch.tensor([0.2, -0.7, 0.5])).tolist()
    [0.0, -0.699999988079071, 0.5]
    """

    def __init__(self, module: nn.Module, *, threshold: float) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.threshold = check_number(threshold, what="threshold", minimum=0)

    def forward(self, *args: object, **kwargs: object) -> object:
        output = self.module(*args, **kwargs)
        tensor = first_tensor(output)
        if tensor is None:
            return output
        return replace_first(output, _zero_below(tensor, self.threshold))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}"


class ThresholdedModel:
    """What :func:`activation_threshold` yields: a thresholded copy and the sparsity it made.

    Attributes:
        model: A copy of the model whose named activations are thresholded while the block
            lasts (run your forward passes through it).
        threshold: The threshold.
        layers: The thresholded layers.
    """

    def __init__(self, model: nn.Module, threshold: float, layers: tuple[str, ...]) -> None:
        self.model = model
        self.threshold = threshold
        self.layers = layers
        self._zeros = dict.fromkeys(layers, 0)
        self._natural = dict.fromkeys(layers, 0)
        self._total = dict.fromkeys(layers, 0)

    def _record(self, layer: str, before: torch.Tensor, after: torch.Tensor) -> None:
        self._natural[layer] += int((before == 0).sum())
        self._zeros[layer] += int((after == 0).sum())
        self._total[layer] += after.numel()

    def _fraction(self, counts: Mapping[str, int], layer: str | None) -> float:
        names = self.layers if layer is None else (layer,)
        unknown = [n for n in names if n not in counts]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not thresholded here; layers: {list(self.layers)}")
        total = sum(self._total[n] for n in names)
        if total == 0:
            raise ValueError("no activation has passed yet: run data through .model first")
        return sum(counts[n] for n in names) / total

    def sparsity(self, layer: str | None = None) -> float:
        """Fraction of exact zeros after thresholding (all thresholded layers, or one)."""
        return self._fraction(self._zeros, layer)

    def natural_sparsity(self, layer: str | None = None) -> float:
        """Fraction of values that were exactly zero already, before thresholding."""
        return self._fraction(self._natural, layer)

    def per_layer(self) -> pd.DataFrame:
        """One row per layer: values seen, natural sparsity and sparsity after thresholding."""
        rows = [
            {
                "layer": n,
                "values": self._total[n],
                "natural_sparsity": self._natural[n] / self._total[n] if self._total[n] else 0.0,
                "sparsity": self._zeros[n] / self._total[n] if self._total[n] else 0.0,
            }
            for n in self.layers
        ]
        return pd.DataFrame(rows, columns=["layer", "values", "natural_sparsity", "sparsity"])


@contextmanager
def activation_threshold(
    model: nn.Module, layers: str | Sequence[str], threshold: float
) -> Iterator[ThresholdedModel]:
    """Zero activations with ``|value| < threshold`` in the named layers, for a ``with`` block.

    The thresholding runs on a *copy* of ``model`` (hooks on the copy, removed when the block
    ends, also on an exception); ``model`` is not touched, so a model shared by others stays
    as it was. The yielded :class:`ThresholdedModel` holds the copy as ``.model`` and counts
    the activation sparsity achieved by the forward passes run through it. For a lasting,
    exportable model, wrap modules in :class:`ThresholdActivation` instead.

    Args:
        model: The model.
        layers: Layer names (module outputs, or ``"<fqn>:input"`` for what enters a module).
        threshold: Values with a smaller magnitude become 0 (0 changes nothing).

    >>> net = nn.Sequential(nn.Identity())
    >>> with activation_threshold(net, ["0"], 2.5) as run:
    ...     out = run.model(torch.arange(10.0))
    >>> out.tolist()[:4], run.sparsity()
    ([0.0, 0.0, 0.0, 3.0], 0.3)
    """
    threshold = check_number(threshold, what="threshold", minimum=0)
    if layers is None:
        raise ValueError("name the layers to threshold, e.g. activation_layers(model)")
    points = _points(model, layers)
    copied = copy_model(model)
    run = ThresholdedModel(copied, threshold, tuple(p.name for p in points))

    def record(point: _Point, module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
        new = _zero_below(tensor, threshold)
        run._record(point.name, tensor.detach(), new.detach())
        return new

    hooks, pre_hooks = _observe(copied, points, record)
    with forward_hooks(copied, hooks, pre_hooks=pre_hooks):
        yield run


def activation_sparsity_effect(
    model: nn.Module,
    data: object,
    layers: str | Sequence[str],
    threshold: float,
    *,
    masks: Masks | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Activation sparsity achieved by a threshold, and what it does to the outputs.

    Runs the data through :func:`activation_threshold` (with the weight masks applied when
    given) and compares the outputs with those of the dense model (no masks, no threshold).

    Returns:
        ``sparsity`` (fraction of exact zeros in the thresholded layers),
        ``natural_sparsity`` (zeros there before thresholding), ``agreement`` (same top-1
        class as the dense model), ``kl`` (mean KL(dense || thresholded)), ``samples``, and
        with labelled data ``accuracy`` and ``dense_accuracy``.

    Raises:
        DataError: For data the model cannot run on, NaN or inf inputs, or labels that are
            not class indices of the model (:func:`prunelab.runtime.metrics.batch_logits`).
        ValueError: An unknown layer, empty data, or a model that does not output class
            scores.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> effect = activation_sparsity_effect(net, torch.randn(32, 4), ["1"], 0.0)
    >>> effect["agreement"], effect["sparsity"] == effect["natural_sparsity"]
    (1.0, True)
    """
    masks = check_masks(masks, optional=True)
    run_on = run_device(model, device)
    overrides = masked_weights(model, masks) if masks is not None else {}
    thresholded, dense = MetricTotals(), MetricTotals()
    with torch.no_grad(), activation_threshold(model, layers, threshold) as run:
        dense_tensors = tensors_on(model, {}, run_on)
        sparse_tensors = tensors_on(run.model, overrides, run_on)
        for batch in iter_batches(data, device=run_on):
            reference = batch_logits(model, dense_tensors, batch.inputs)
            logits = batch_logits(run.model, sparse_tensors, batch.inputs)
            accumulate_batch(thresholded, logits, batch.labels, reference, _METRICS)
            accumulate(dense, reference, batch.labels, None, ("accuracy",))
    if thresholded.samples == 0:
        raise ValueError("data is empty: nothing to evaluate")
    metrics = summarize(thresholded, _METRICS, dense=False)
    result = {
        "sparsity": run.sparsity(),
        "natural_sparsity": run.natural_sparsity(),
        "agreement": metrics["agreement"],
        "kl": metrics["kl"],
        "samples": metrics["samples"],
    }
    if "accuracy" in metrics:  # every sample labelled
        result["accuracy"] = metrics["accuracy"]
        result["dense_accuracy"] = summarize(dense, ("accuracy",), dense=True)["accuracy"]
    return result
