"""The training loop: fine-tuning with masks kept, and pruning on a schedule while training.

One-shot pruning loses accuracy; training wins it back. Everything here trains a *copy* of the
model it is given (the model itself is never modified) and returns ``(model, history)``: the
trained copy, a plain PyTorch module in eval mode with the pruned weights written in as exact
zeros (no ``torch.nn.utils.prune`` buffers, so it saves and exports as it is), and a DataFrame
with one row per optimizer step.

Classifiers and causal language models are trained alike. A classifier's ``(batch, classes)``
scores learn from labels ``(batch,)``; a language model's ``(batch, positions, vocab)`` scores
learn from next-token labels ``(batch, positions)`` (-100: not scored), with the mean token
cross-entropy of :func:`prunelab.runtime.metrics.mean_token_loss` (the ``loss`` that
``prunelab.evaluate`` reports) and next-token accuracy; held-out token data also gets
``eval_perplexity``. A SparseGPT :class:`~prunelab.core.sparsegpt.Reconstructed` starts from
its new weights, not the dense ones. Tied weights (a language model's output head and input
embedding) stay one tensor.

How masks are kept: before each optimizer step the gradients of pruned weights are zeroed (so
momentum and Adam statistics never push them), and after it the weights are multiplied by
their masks. Coupled masks (biases of pruned channels, ``Masks.all()``) are kept too.

* :func:`finetune` trains with fixed masks.
* :func:`prune_while_training` re-selects masks on a schedule and trains in between:
  :class:`OneShot`, :class:`Iterative` (prune, fine-tune, repeat), :class:`Gradual` (linear
  or the cubic schedule of Zhu & Gupta, 2017), or :class:`DynamicSparse` (constant sparsity,
  drop the smallest kept weights and regrow as many, at random as in SET or by gradient
  magnitude as in RigL).
* :func:`~prunelab.training.freeze` / :func:`~prunelab.training.unfreeze` and
  ``TrainConfig(frozen=...)`` keep layers fixed.
* ``TrainConfig(activation_layers=..., activation_threshold=...)`` trains with activations
  below a threshold zeroed (:func:`prunelab.activations.activation_threshold`): no gradient
  flows through a zeroed activation.
* :func:`~prunelab.training.fake_quantize` and :func:`~prunelab.training.evaluate_quantized`
  show what k-bit kept weights cost.

Randomness is explicit: shuffling, random regrowth and random strategies draw from
``TrainConfig.seed`` through their own generators, never from torch's global state.

>>> import torch
>>> from torch import nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
>>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
>>> tuned, history = finetune(net, masks, (x, y), config=TrainConfig(epochs=2, batch_size=16))
>>> len(history), bool((tuned[0].weight[~masks["0.weight"]] == 0).all())
(8, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from ..activations.thresholding import activation_threshold
from ..core.apply import bake
from ..core.calibration import Calibration
from ..core.granularity import Unstructured
from ..core.masks import Masks, check_masks
from ..core.pruner import Pruner
from ..core.strategies import Strategy, get_strategy
from ..core.targets import get_parameter
from ..runtime.batches import iter_batches
from ..runtime.functional import run_device
from ..runtime.metrics import (
    MetricTotals,
    accumulate_batch,
    batch_logits,
    logits_of,
    mean_token_loss,
    scored_tokens,
    summarize,
)
from .config import Callback, TrainConfig, TrainProgress, _train_config
from .freezing import _changed, _frozen_modules, _frozen_parameters
from .schedules import DynamicSparse, Schedule

__all__ = ["finetune", "prune_while_training", "steps_per_epoch"]


def _measure(
    model: nn.Module, data: object, device: torch.device, *, reference: nn.Module | None = None
) -> dict[str, float]:
    """Accuracy and loss on labelled ``data`` (and perplexity, for token data), counted as
    ``prunelab.evaluate`` counts them; with ``reference``, also the agreement of top-1
    predictions with that model's."""
    # summarize() leaves perplexity out for a classifier (no tokens counted): asking is free
    chosen = ("accuracy", "loss", "perplexity")
    if reference is not None:
        chosen += ("agreement",)
    totals = MetricTotals()
    with torch.no_grad():
        for batch in iter_batches(data, batch_size=256, device=device):
            if batch.labels is None:
                raise ValueError("evaluation data has no labels")
            logits = batch_logits(model, {}, batch.inputs)
            # the reference runs on this same batch, so a shuffling loader compares like with like
            expected = None if reference is None else batch_logits(reference, {}, batch.inputs)
            accumulate_batch(totals, logits, batch.labels, expected, chosen)
    if not totals.samples:
        raise ValueError("evaluation data is empty")
    return summarize(totals, chosen, dense=False)


def _loader(data: object, config: TrainConfig) -> object:
    """Shuffled batches with a seeded generator, so a run is reproducible."""
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and all(isinstance(d, torch.Tensor) for d in data)
    ):
        data = TensorDataset(*data)
    elif isinstance(data, torch.Tensor):
        raise ValueError("training needs labels: pass (inputs, labels) or a labelled Dataset")
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        if len(data) == 0:
            raise ValueError("training data is empty")
        generator = torch.Generator().manual_seed(config.seed)
        return DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator)
    if isinstance(data, DataLoader):
        return data
    raise TypeError(
        "data must be an (inputs, labels) pair of tensors, a labelled Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def steps_per_epoch(data: object, *, batch_size: int = 64) -> int:
    """Optimizer steps per epoch for ``data`` at ``batch_size`` (to place schedule steps).

    >>> steps_per_epoch((torch.zeros(100, 2), torch.zeros(100)), batch_size=32)
    4
    """
    loader = _loader(data, TrainConfig(batch_size=batch_size))
    return len(loader)


def _enforce(model: nn.Module, masks: Masks | None) -> None:
    if masks is None:
        return
    for fqn, mask in masks.all().items():
        param = get_parameter(model, fqn)
        if tuple(param.shape) != tuple(mask.shape):
            raise ValueError(
                f"mask for {fqn!r} has shape {tuple(mask.shape)}, the tensor {tuple(param.shape)}"
            )
        param.data.mul_(mask.to(param.device))


class _Controller:
    """Decides the masks: fixed (finetune) or on a schedule (prune_while_training)."""

    def updates(self, total: int) -> set[int]:
        return set()

    def masks(self, step: int, model: nn.Module, current: Masks | None) -> Masks | None:
        return current

    def wants_gradients(self, current: Masks | None) -> bool:
        return False


@dataclass
class _Fixed(_Controller):
    fixed: Masks

    def masks(self, step: int, model: nn.Module, current: Masks | None) -> Masks | None:
        return self.fixed


@dataclass
class _Scheduled(_Controller):
    strategy: Strategy
    schedule: Schedule
    data: object
    seed: int
    generator: torch.Generator = field(default_factory=torch.Generator)

    def updates(self, total: int) -> set[int]:
        steps = self.schedule.update_steps(total)
        if self.schedule.last_step() >= total:
            raise ValueError(
                f"the schedule reaches its final sparsity at step {self.schedule.last_step()}, "
                f"but training has only {total} steps; train longer or end the schedule earlier"
            )
        return set(steps)

    def wants_gradients(self, current: Masks | None) -> bool:
        schedule = self.schedule
        return (
            isinstance(schedule, DynamicSparse)
            and schedule.regrow == "gradient"
            and (current is not None)
        )

    def masks(self, step: int, model: nn.Module, current: Masks | None) -> Masks | None:
        if isinstance(self.schedule, DynamicSparse) and current is not None:
            return _drop_and_regrow(model, current, self.schedule, self.generator)
        calibration = None
        if self.strategy.needs:
            calibration = Calibration(model, self.data, batches=2, batch_size=64)
        pruner = Pruner(model, self.strategy, calibration=calibration, seed=self.seed)
        return pruner.masks(sparsity=self.schedule.sparsity_at(step))


def _drop_and_regrow(
    model: nn.Module, masks: Masks, schedule: DynamicSparse, generator: torch.Generator
) -> Masks:
    new = {}
    for fqn, mask in masks.items():
        param = get_parameter(model, fqn)
        flat_mask = mask.flatten()
        kept, pruned = int(flat_mask.sum()), int((~flat_mask).sum())
        count = min(round(schedule.fraction * kept), pruned)
        if count == 0:
            new[fqn] = mask
            continue
        weight = param.detach().abs().flatten().cpu()
        drop_scores = torch.where(flat_mask, weight, torch.full_like(weight, math.inf))
        dropped = torch.topk(drop_scores, count, largest=False).indices
        if schedule.regrow == "gradient" and param.grad is not None:
            grow_scores = param.grad.detach().abs().flatten().cpu().clone()
        else:
            grow_scores = torch.rand(weight.shape, generator=generator)
        grow_scores[flat_mask] = -math.inf  # only positions pruned before this update
        grown = torch.topk(grow_scores, count).indices
        updated = flat_mask.clone()
        updated[dropped] = False
        updated[grown] = True
        new[fqn] = updated.view(mask.shape)
    return Masks(new, coupled=masks.coupled)


def _reset_state(optimizer: torch.optim.Optimizer, model: nn.Module, masks: Masks) -> None:
    # pruned and regrown weights start afresh: no momentum or Adam statistics carried over
    for fqn, mask in masks.all().items():
        param = get_parameter(model, fqn)
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.mul_(mask.to(value.device))


def _optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


@contextmanager
def _thresholded(model: nn.Module, config: TrainConfig) -> Iterator[nn.Module]:
    """The network to train: the copy itself, or a thresholded copy of it."""
    if not config.activation_layers:
        yield model
        return
    with activation_threshold(model, config.activation_layers, config.activation_threshold) as run:
        yield run.model


@dataclass
class _Run:
    """One training run: the network being trained, its optimizer and its masks."""

    net: nn.Module
    controller: _Controller
    config: TrainConfig
    device: torch.device
    updates: set[int]
    masks: Masks | None = None
    optimizer: torch.optim.Optimizer | None = None
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    sparsity: float = 0.0

    def update(self, step: int) -> None:
        self.masks = self.controller.masks(step, self.net, self.masks)
        with torch.no_grad():
            if self.masks is not None:  # SparseGPT's new weights first
                self.masks.write_into(self.net)
            _enforce(self.net, self.masks)
        # resolved once per mask change, not per step
        self.pairs = [
            (get_parameter(self.net, fqn), mask.to(self.device))
            for fqn, mask in (self.masks.all().items() if self.masks is not None else ())
        ]
        self.sparsity = self.masks.sparsity() if self.masks is not None else 0.0
        if self.optimizer is not None and self.masks is not None:
            _reset_state(self.optimizer, self.net, self.masks)

    def step(self, step: int, epoch: int, batch: object) -> dict:
        if batch.labels is None:
            raise ValueError("training needs labels: pass (inputs, labels) batches")
        pending = step in self.updates
        if pending and not self.controller.wants_gradients(self.masks):
            self.update(step)
            pending = False
        self.optimizer.zero_grad(set_to_none=False)
        logits = logits_of(self.net(batch.inputs))
        loss, correct = _loss_and_correct(logits, batch.labels)
        loss.backward()
        if pending:  # RigL regrows where the dense gradient is largest: update after backward
            self.update(step)
        for param, mask in self.pairs:
            if param.grad is not None:
                param.grad.mul_(mask)
        self.optimizer.step()
        with torch.no_grad():
            for param, mask in self.pairs:
                param.mul_(mask)
        return {
            "step": step,
            "epoch": epoch,
            "loss": float(loss.detach()),
            "accuracy": float(correct.float().mean()) if correct.numel() else math.nan,
            "sparsity": self.sparsity,
        }


def _loss_and_correct(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's training loss and which predictions are right: per sample for class scores
    (batch, classes), per scored token for a language model's (batch, positions, vocab)."""
    if logits.ndim == 3:  # next tokens: the loss and positions that evaluation counts
        loss = mean_token_loss(logits, labels)
        with torch.no_grad():
            rows, ids, _ = scored_tokens(logits.detach(), labels)
        return loss, rows.argmax(1) == ids
    labels = labels.reshape(-1).long()
    return F.cross_entropy(logits, labels), logits.argmax(1) == labels


def _start(run: _Run, frozen: set[str]) -> dict[str, torch.Tensor]:
    """Freeze ``frozen``, apply fixed masks and make the optimizer; the frozen values before."""
    for name, param in run.net.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    if not run.updates:  # fixed masks hold from the first step
        run.update(0)
    named = run.net.named_parameters()
    before = {n: p.detach().clone() for n, p in named if not p.requires_grad}
    trainable = [p for p in run.net.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("every parameter is frozen: there is nothing to train")
    run.optimizer = _optimizer(trainable, run.config)
    return before


def _train(
    model: nn.Module,
    data: object,
    controller: _Controller,
    config: TrainConfig,
    extras: tuple[object, torch.device | str | None, Callback | None],
) -> tuple[nn.Module, pd.DataFrame]:
    eval_data, device, callback = extras
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    loader = _loader(data, config)
    total = config.epochs * len(loader)
    if total == 0:
        raise ValueError("training data gives no batches")
    updates = controller.updates(total)
    start = bake(model)  # a plain copy; the zeros of a model from apply() written in
    frozen = _frozen_parameters(start, config.frozen) if config.frozen else set()
    run_on = run_device(start, device)
    rows: list[dict] = []
    with _thresholded(start.to(run_on), config) as net:
        run = _Run(net, controller, config, run_on, updates)
        before = _start(run, frozen)
        still = _frozen_modules(net)
        for epoch in range(config.epochs):
            net.train()
            for module in still:
                module.eval()
            for batch in iter_batches(loader, device=run_on):
                rows.append(run.step(len(rows), epoch, batch))
                if callback is not None:
                    callback(TrainProgress(total=total, **rows[-1]))
            if eval_data is not None:
                measured = _measure(net.eval(), eval_data, run_on)
                rows[-1]["eval_accuracy"] = measured["accuracy"]
                rows[-1]["eval_loss"] = measured["loss"]
                if "perplexity" in measured:  # token data
                    rows[-1]["eval_perplexity"] = measured["perplexity"]
    changed = _changed(net, before, run.masks)
    if changed:
        raise RuntimeError(f"frozen parameters changed during training: {changed}")
    return net.eval(), pd.DataFrame(rows)


def finetune(
    model: nn.Module,
    masks: Masks,
    data: object,
    *,
    config: TrainConfig | None = None,
    eval_data: object | None = None,
    device: torch.device | str | None = None,
    callback: Callback | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train a pruned copy of ``model`` with ``masks`` kept: pruned weights stay exactly zero.

    Args:
        model: The dense (or already pruned) model; not modified.
        masks: The masks to keep (``masks.all()``: coupled biases too). A SparseGPT
            :class:`~prunelab.core.sparsegpt.Reconstructed` brings its new weights: training
            starts from them.
        data: Labelled training data: ``(inputs, labels)``, a Dataset (shuffled with a
            generator seeded by ``config.seed``) or a DataLoader. For a language model,
            token ids ``(sequences, positions)`` and their next tokens (-100: not scored),
            e.g. ``prunelab.data.load("sample:pydoc-text", split="train")``.
        config: Epochs, learning rate, optimizer, batch size, seed, frozen layers, ...
            (None: ``TrainConfig()``).
        eval_data: Labelled data measured after each epoch (``eval_accuracy``/``eval_loss``,
            and ``eval_perplexity`` for token data).
        device: Where to train (default: where the model is).
        callback: Called with a :class:`TrainProgress` after every step.

    Returns:
        ``(trained, history)``: the trained copy in eval mode with zeros written in (a plain
        module, no pruning buffers), on ``device``; and a DataFrame with one row per step:
        step, epoch, loss and accuracy of the batch (mean token cross-entropy and next-token
        accuracy over scored tokens, for a language model), sparsity (plus eval columns).

    Raises:
        ValueError: For bad settings, masks that do not fit the model, or unlabelled data.
        RuntimeError: If a frozen parameter changed (it never should).

    >>> net = nn.Linear(4, 2)
    >>> masks = Masks({"weight": torch.rand(2, 4) > 0.5})
    >>> x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    >>> tuned, history = finetune(net, masks, (x, y), config=TrainConfig(epochs=1))
    >>> bool((tuned.weight[~masks["weight"]] == 0).all()), list(history.columns)
    (True, ['step', 'epoch', 'loss', 'accuracy', 'sparsity'])
    """
    check_masks(masks)
    config = _train_config(config)
    return _train(model, data, _Fixed(masks), config, (eval_data, device, callback))


def prune_while_training(
    model: nn.Module,
    data: object,
    *,
    strategy: str | Strategy,
    schedule: Schedule,
    config: TrainConfig | None = None,
    eval_data: object | None = None,
    device: torch.device | str | None = None,
    callback: Callback | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train a copy of ``model`` while pruning it with ``strategy`` on ``schedule``.

    At each of the schedule's update steps the masks are selected anew on the current
    weights (a data-driven strategy gets a fresh two-batch :class:`Calibration` of the
    training data); in between, training keeps them as :func:`finetune` does. With a
    :class:`DynamicSparse` schedule, the strategy picks the first masks and later updates
    drop and regrow weights. Steps count optimizer steps from 0
    (:func:`steps_per_epoch` helps to place them).

    Args:
        model: The dense model; not modified.
        data: Labelled training data (as for :func:`finetune`).
        strategy: A registered strategy name or a Strategy.
        schedule: :class:`OneShot`, :class:`Iterative`, :class:`Gradual` or
            :class:`DynamicSparse`.
        config: Training settings; ``config.seed`` also seeds random strategies.
        eval_data, device, callback: As for :func:`finetune`.

    Returns:
        ``(trained, history)`` as for :func:`finetune`.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> from prunelab.training import Gradual
    >>> schedule = Gradual(0.0, 0.5, start=0, end=4, kind="linear")
    >>> _, history = prune_while_training(net, (x, y), strategy="global-magnitude",
    ...     schedule=schedule, config=TrainConfig(epochs=2, batch_size=16))
    >>> history["sparsity"].round(3).tolist()
    [0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5]
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            "schedule must be OneShot, Iterative, Gradual or DynamicSparse, "
            f"got {type(schedule).__name__}"
        )
    config = _train_config(config)
    chosen = get_strategy(strategy)
    if isinstance(schedule, DynamicSparse) and not isinstance(chosen.granularity, Unstructured):
        raise ValueError(
            f"dynamic sparse training drops and regrows single weights; strategy "
            f"{chosen.name!r} prunes {chosen.granularity.name} groups: use an unstructured one"
        )
    if chosen.fixed_sparsity is not None:
        raise ValueError(
            f"strategy {chosen.name!r} fixes its own sparsity; it cannot follow a schedule"
        )
    controller = _Scheduled(chosen, schedule, data, config.seed)
    controller.generator.manual_seed(config.seed)
    return _train(model, data, controller, config, (eval_data, device, callback))
