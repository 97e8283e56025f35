"""Logits and metric totals: what every evaluation of a classifier or language model adds up.

One batch of the user's data goes through :func:`batch_logits` (the model run on it, its errors
said in the data's terms), and :func:`accumulate` adds the batch to a :class:`MetricTotals`:
accuracy and loss against labels, agreement and KL against the dense model's outputs.
:func:`summarize` turns the totals into the numbers users read. ``prunelab.evaluate``, the
sweeps, training and activation thresholding all count the same way through here.

Two kinds of output are scored:

* a classifier's ``(batch, classes)`` scores, against labels ``(batch,)``: every metric is a
  mean over samples;
* a causal language model's ``(batch, positions, vocab)`` scores, against labels
  ``(batch, positions)`` holding the *next* token at each position (``-100`` = ignore, as
  Hugging Face does): every metric is a mean over scored tokens. ``loss`` is the mean token
  cross-entropy, ``perplexity`` is ``exp`` of that mean over all tokens of the data (not a
  mean of per-batch perplexities), ``accuracy`` is next-token accuracy, ``agreement`` and
  ``kl`` compare next-token distributions with the dense model's, position by position
  (positions whose label is -100 are left out of them too).

``perplexity`` is a language-model metric: for a classifier it is left out of the results,
as accuracy is for unlabelled data.

>>> logits = torch.zeros(1, 3, 4)  # a uniform guess over 4 tokens, at 3 positions
>>> totals = MetricTotals()
>>> accumulate(totals, logits, torch.tensor([[1, 2, -100]]), None, METRICS)
>>> round(summarize(totals, METRICS, dense=True)["perplexity"], 4)
4.0
"""

from __future__ import annotations

import math
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
    "CLASSIFIER_METRICS",
    "FIDELITY",
    "IGNORE_INDEX",
    "LANGUAGE_MODEL_METRICS",
    "LOWER_IS_BETTER",
    "METRICS",
    "MetricTotals",
    "accumulate",
    "accumulate_batch",
    "batch_logits",
    "check_labels",
    "check_metrics",
    "check_token_labels",
    "default_metrics",
    "headline_metric",
    "is_token_data",
    "logits_of",
    "mean_token_loss",
    "model_input_errors",
    "scored_tokens",
    "summarize",
]

METRICS = ("accuracy", "loss", "agreement", "kl", "perplexity")
FIDELITY = ("agreement", "kl")  # the metrics that compare with the dense model's outputs
LOWER_IS_BETTER = ("loss", "kl", "perplexity")  # the metrics whose drop is a rise
CLASSIFIER_METRICS = ("accuracy", "loss", "agreement", "kl")
LANGUAGE_MODEL_METRICS = ("perplexity", "loss", "accuracy", "agreement", "kl")
IGNORE_INDEX = -100  # a label that is not scored (padding), as in Hugging Face and torch


def is_token_data(data: object) -> bool:
    """Whether ``data`` holds token sequences for a language model (labels per position).

    True for data loaded from a text spec (:mod:`prunelab.io.text`, ``kind == "tokens"``), and
    for tensors or ``(inputs, labels)`` pairs whose labels are ``(batch, positions)``.

    >>> is_token_data((torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long)))
    True
    >>> is_token_data((torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)))
    False
    """
    for _ in range(8):  # Subset of a Subset ...: unwrap a few levels, never loop forever
        inner = getattr(data, "dataset", None)
        if getattr(data, "kind", None) == "tokens" or inner is None:
            break
        data = inner
    if getattr(data, "kind", None) == "tokens":
        return True
    labels = getattr(data, "labels", None)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        labels = data[1]
    return isinstance(labels, torch.Tensor) and labels.ndim == 2


def default_metrics(data: object) -> tuple[str, ...]:
    """The metrics shown for ``data`` by default: perplexity first for token data.

    >>> default_metrics(torch.zeros(3, 2))
    ('accuracy', 'loss', 'agreement', 'kl')
    """
    return LANGUAGE_MODEL_METRICS if is_token_data(data) else CLASSIFIER_METRICS


def headline_metric(data: object) -> str:
    """The one metric that stands for quality: ``perplexity`` for token data, else accuracy."""
    return default_metrics(data)[0]


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
    """The scores in a model's output: a tensor, the first of a tuple, or ``["logits"]``
    (a Hugging Face ``ModelOutput`` too): ``(batch, classes)`` for a classifier,
    ``(batch, positions, vocab)`` for a language model.

    Raises:
        ValueError: For any other output, naming what was found and what is accepted.
    """
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        output = output[0]
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        output = output["logits"]
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 3):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            "evaluate expects class scores of shape (batch, classes) or a language model's "
            f"scores of shape (batch, positions, vocab) from the model, got {shape}"
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
    """Running sums over batches; :func:`summarize` divides them out.

    ``samples`` counts inputs (sequences, for a language model) and ``labelled`` the inputs of
    labelled batches; ``scored`` counts what the label metrics average over (samples, or
    tokens not labelled -100) and ``compared`` what fidelity averages over (samples, or
    token positions). ``tokens`` stays 0 for a classifier.
    """

    samples: int = 0
    labelled: int = 0
    correct: int = 0
    loss: float = 0.0
    agree: int = 0
    kl: float = 0.0
    scored: int = 0
    compared: int = 0
    tokens: int = 0


def accumulate(
    totals: MetricTotals,
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    dense: torch.Tensor | None,
    chosen: tuple[str, ...],
) -> None:
    """Add one batch; ``dense`` holds the dense model's outputs of the whole run (or None),
    read at this batch's offset."""
    reference = None
    if dense is not None and any(m in chosen for m in FIDELITY):
        n = logits.shape[0]
        reference = dense[totals.samples : totals.samples + n]
    accumulate_batch(totals, logits, labels, reference, chosen)


def accumulate_batch(
    totals: MetricTotals,
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    reference: torch.Tensor | None,
    chosen: tuple[str, ...],
) -> None:
    """Add one batch, with ``reference`` the dense model's outputs on this very batch."""
    n = logits.shape[0]
    keep = None  # for tokens: the positions scored (label not -100)
    per_token = logits.ndim == 3
    if per_token:
        if labels is not None:
            logits, labels, keep = scored_tokens(logits, labels)
        else:
            logits = logits.reshape(-1, logits.shape[-1])
    if labels is not None:
        if keep is None:
            labels = check_labels(labels, logits)
        totals.correct += int((logits.argmax(dim=1) == labels).sum())
        if "loss" in chosen or "perplexity" in chosen:
            totals.loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        totals.labelled += n
        totals.scored += labels.shape[0]
    if per_token:
        totals.tokens += logits.shape[0]
    if reference is not None and any(m in chosen for m in FIDELITY):
        reference = reference.to(logits.device)
        if reference.ndim == 3:
            reference = reference.reshape(-1, reference.shape[-1])
            if keep is not None and reference.shape[0] == keep.shape[0]:
                reference = reference[keep]
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
                    F.log_softmax(reference.float(), dim=1),
                    log_target=True,
                    reduction="sum",
                )
            )
        totals.compared += logits.shape[0]
    totals.samples += n


def scored_tokens(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scored positions of a language model's batch: ``(logits, labels, keep)`` with
    ``logits`` ``(tokens, vocab)`` and ``labels`` ``(tokens,)`` for the positions whose label
    is not -100, and ``keep`` the flat boolean mask of those positions. Every token metric
    (and training's loss) reads the same positions through here.

    >>> rows, ids, keep = scored_tokens(torch.zeros(1, 3, 4), torch.tensor([[1, -100, 2]]))
    >>> tuple(rows.shape), ids.tolist(), keep.tolist()
    ((2, 4), [1, 2], [True, False, True])
    """
    labels = check_token_labels(labels, logits)
    keep = labels.reshape(-1) != IGNORE_INDEX
    return logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep], keep


def mean_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the scored positions (label not -100), as a tensor
    that gradients flow through: the ``loss`` that :func:`summarize` reports, for one batch.
    A batch with no scored position has loss 0 (and no gradient).

    >>> float(mean_token_loss(torch.zeros(1, 3, 4), torch.tensor([[1, -100, 2]])))  # log 4
    1.3862943649291992
    """
    rows, ids, _ = scored_tokens(logits, labels)
    if not ids.numel():
        return logits.sum() * 0.0
    return F.cross_entropy(rows, ids)


def check_token_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``labels`` as int64 next-token ids ``(batch, positions)`` matching language-model
    ``logits`` ``(batch, positions, vocab)``; -100 marks a position that is not scored.

    Raises:
        DataError: Naming the shapes, or the vocabulary and the ids found.
    """
    batch, positions, vocab = logits.shape
    if labels.shape != (batch, positions):
        raise DataError(
            f"a language model's labels must be next-token ids of shape (batch, positions) = "
            f"({batch}, {positions}), matching its outputs; got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise DataError(f"labels must be integer token ids, got {labels.dtype}")
    labels = labels.long()
    scored = labels[labels != IGNORE_INDEX]
    if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= vocab):
        raise DataError(
            f"labels must be token ids from 0 to {vocab - 1} (the model's vocabulary has "
            f"{vocab} tokens) or {IGNORE_INDEX} (ignored); the data has ids from "
            f"{int(scored.min())} to {int(scored.max())}"
        )
    return labels


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
    """The chosen metrics from ``totals``, plus ``samples`` (inputs: sequences for a language
    model). ``dense=True``: the outputs are the dense model's own (agreement 1, kl 0)."""
    result: dict[str, float] = {}
    labelled = totals.labelled == totals.samples and totals.scored > 0
    scored = max(totals.scored, 1)
    compared = max(totals.compared, 1)
    if "perplexity" in chosen and labelled and totals.tokens:
        mean = totals.loss / scored
        result["perplexity"] = math.exp(mean) if mean < 700 else math.inf
    if "accuracy" in chosen and labelled:
        result["accuracy"] = totals.correct / scored
    if "loss" in chosen and labelled:
        result["loss"] = totals.loss / scored
    if "agreement" in chosen:
        result["agreement"] = 1.0 if dense else totals.agree / compared
    if "kl" in chosen:
        result["kl"] = 0.0 if dense else max(totals.kl / compared, 0.0)
    result["samples"] = totals.samples
    return result
