"""Logits and metric totals: what every evaluation of a classifier adds up.

One batch of the user's data goes through :func:`batch_logits` (the model run on it, its errors
said in the data's terms), and :func:`accumulate` adds the batch to a :class:`MetricTotals`:
accuracy and loss against labels, agreement and KL against the dense model's outputs.
:func:`summarize` turns the totals into the numbers users read. ``prunelab.evaluate``, the
sweeps, training and activation thresholding all count the same way through here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, PrunelabError, is_out_of_memory
from .files import one_line
from .functional import functional_forward

__all__ = [
    "FIDELITY",
    "METRICS",
    "MetricTotals",
    "accumulate",
    "batch_logits",
    "check_labels",
    "check_metrics",
    "logits_of",
    "model_input_errors",
    "summarize",
]

METRICS = ("accuracy", "loss", "agreement", "kl")
FIDELITY = ("agreement", "kl")  # the metrics that compare with the dense model's outputs


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """``metrics`` as a tuple of known names; a single name is accepted as a one-name tuple."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in METRICS]
    if unknown or not chosen:
        raise ValueError(f"unknown metric(s) {unknown or chosen!r}; accepted: {', '.join(METRICS)}")
    return chosen


def logits_of(output: object) -> torch.Tensor:
    """The class scores in a model's output: a tensor, the first of a tuple, or ``["logits"]``."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        output = output["logits"]
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"evaluate expects class scores of shape (batch, classes) from the model, got {shape}"
        )
    return output.float()


def _shown(inputs: torch.Tensor) -> str:
    shape = "x".join(map(str, inputs.shape[1:])) or "scalars"
    return f"{shape} {str(inputs.dtype).removeprefix('torch.')}"


def batch_logits(
    model: nn.Module, tensors: dict[str, torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """The model's class scores for one batch of the user's data: the evaluation boundary.

    ``model`` runs through :func:`prunelab.runtime.functional.functional_forward` with ``tensors``
    swapped in. What is wrong with the data is said here, in the data's terms, rather than
    as torch's error from deep inside the model (``mat1 and mat2 shapes cannot be
    multiplied``) or as an accuracy computed over NaN.

    Raises:
        DataError: For NaN or inf inputs, and for inputs the model cannot run on (wrong shape
            or dtype, token ids out of range), naming the inputs' shape and dtype.
        ValueError: If the model does not output class scores.
    """
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        per_sample = ~torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(dim=1)
        raise DataError(
            f"{int(per_sample.sum())} of {inputs.shape[0]} inputs in a batch hold NaN or inf "
            "values: outputs on them, and any accuracy, would mean nothing; clean the data or "
            "leave those samples out"
        )
    with model_input_errors(inputs):
        output = functional_forward(model, tensors, inputs)
    return logits_of(output)


@contextmanager
def model_input_errors(inputs: torch.Tensor) -> Iterator[None]:
    """Run the model on the user's ``inputs`` inside: torch's failure there is a DataError.

    Torch says what went wrong in the model's terms (``mat1 and mat2 shapes cannot be
    multiplied``, ``LSTM: Expected input to be 2D or 3D``, ``index out of range in self``);
    the error names the inputs' shape and dtype and keeps torch's message and exception
    (``__cause__``). Running out of memory is not the data's fault and passes unchanged.
    """
    try:
        yield
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        if is_out_of_memory(exc) or isinstance(exc, PrunelabError):
            raise
        raise DataError(
            f"the model cannot run on this data (inputs of {_shown(inputs)}): "
            f"{one_line(exc, limit=200)}"
        ) from exc


@dataclass
class MetricTotals:
    """Running sums over batches; :func:`summarize` divides them out."""

    samples: int = 0
    labelled: int = 0
    correct: int = 0
    loss: float = 0.0
    agree: int = 0
    kl: float = 0.0


def accumulate(
    totals: MetricTotals,
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    dense: torch.Tensor | None,
    chosen: tuple[str, ...],
) -> None:
    n = logits.shape[0]
    if labels is not None:
        labels = check_labels(labels, logits)
        totals.correct += int((logits.argmax(dim=1) == labels).sum())
        if "loss" in chosen:
            totals.loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        totals.labelled += n
    if dense is not None and any(m in chosen for m in FIDELITY):
        reference = dense[totals.samples : totals.samples + n].to(logits.device)
        if reference.shape != logits.shape:
            raise ValueError(
                "dense and pruned outputs differ in shape; fidelity needs data that reads the "
                "same every time"
            )
        totals.agree += int((logits.argmax(dim=1) == reference.argmax(dim=1)).sum())
        if "kl" in chosen:
            totals.kl += float(
                F.kl_div(
                    F.log_softmax(logits, dim=1),
                    F.log_softmax(reference, dim=1),
                    log_target=True,
                    reduction="sum",
                )
            )
    totals.samples += n


def check_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``labels`` as int64 class indices, refused unless one per sample and within the classes
    of ``logits`` (batch, classes): cross-entropy would fail with ``Target 19 is out of
    bounds``, and accuracy would count such labels as wrong without a word.

    Raises:
        DataError: Naming the model's classes and the labels found.
    """
    labels = labels.reshape(-1).long()
    n, classes = logits.shape
    if labels.shape[0] != n:
        raise DataError(f"{labels.shape[0]} labels for {n} inputs in a batch; give one per input")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise DataError(
            f"labels must be class indices from 0 to {classes - 1} (the model has {classes} "
            f"outputs); the data has labels from {int(labels.min())} to {int(labels.max())}"
        )
    return labels


def summarize(totals: MetricTotals, chosen: tuple[str, ...], dense: bool) -> dict[str, float]:
    result: dict[str, float] = {}
    labelled = totals.labelled == totals.samples
    if "accuracy" in chosen and labelled:
        result["accuracy"] = totals.correct / totals.samples
    if "loss" in chosen and labelled:
        result["loss"] = totals.loss / totals.samples
    if "agreement" in chosen:
        result["agreement"] = 1.0 if dense else totals.agree / totals.samples
    if "kl" in chosen:
        result["kl"] = 0.0 if dense else max(totals.kl / totals.samples, 0.0)
    result["samples"] = totals.samples
    return result
