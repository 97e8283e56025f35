"""Lesson 6: recovery by fine-tuning. One-shot, fine-tuned and gradual at the same sparsity.

Three ways to the same sparsity, each judged on the same test data: prune once and stop
(*one-shot*); prune once, then train with the zeros kept (*fine-tuned*,
:func:`prunelab.training.finetune`); or train while the sparsity rises step by step from
dense to the target (*gradual*, :func:`prunelab.training.prune_while_training` on a
:class:`~prunelab.training.Gradual` schedule). Both trainings get the same steps, so the
comparison is fair. On the small MLP sample a run takes well under a second on one CPU thread.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
>>> x, y = torch.randn(96, 4), torch.randint(0, 3, (96,))
>>> result = recover(net, (x, y), (x, y), sparsity=0.8, epochs=1)
>>> list(result.accuracies()), round(result.sparsity, 2)
(['one-shot', 'fine-tuned', 'gradual'], 0.8)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
from torch import nn

from .. import figures, training
from ..analysis import evaluate
from ..core.masks import Masks
from ..core.pruner import prune

__all__ = [
    "SAMPLE_MODEL",
    "STRATEGY",
    "Recovery",
    "one_shot",
    "recover",
    "recovery_figure",
]

SAMPLE_MODEL = "sample:digits-mlp"  # 50k weights: three runs of a few epochs take a second
STRATEGY = "global-magnitude"
LEARNING_RATE = 3e-3
GRADUAL_SHARE = 2 / 3  # the gradual run reaches the target two thirds into its training


@dataclass(frozen=True)
class Recovery:
    """Test accuracy of the dense model and of the three ways to one sparsity.

    Attributes:
        dense: The dense model's accuracy.
        one_shot: Pruned once, no training.
        fine_tuned: Pruned once, then trained with the zeros kept.
        gradual: Trained while pruned step by step to the same sparsity.
        sparsity: The sparsity all three reach (of the pruned layers' weights).
        steps: Optimizer steps of each training run.
        histories: ``{"fine-tuned": ..., "gradual": ...}``: one row per step (loss,
            accuracy and sparsity of the batch), as :func:`prunelab.figures.training_curves`
            draws them.
    """

    dense: float
    one_shot: float
    fine_tuned: float
    gradual: float
    sparsity: float
    steps: int
    histories: dict[str, pd.DataFrame] = field(repr=False)

    def accuracies(self) -> dict[str, float]:
        """``{method: accuracy}`` in the lesson's order."""
        return {"one-shot": self.one_shot, "fine-tuned": self.fine_tuned, "gradual": self.gradual}


def one_shot(model: nn.Module, data: object, *, sparsity: float) -> tuple[Masks, float]:
    """Global magnitude masks at ``sparsity`` and the accuracy with them, no training."""
    masks = prune(model, STRATEGY, sparsity=sparsity)
    return masks, evaluate(model, data, masks=masks, metrics=("accuracy",))["accuracy"]


def recover(
    model: nn.Module,
    train: object,
    test: object,
    *,
    sparsity: float,
    epochs: int = 2,
    seed: int = 0,
) -> Recovery:
    """Prune ``model`` to ``sparsity`` three ways and measure each on ``test``.

    Args:
        model: The dense model; not modified (the trainings work on copies).
        train: Labelled training data.
        test: Labelled test data.
        sparsity: The target sparsity.
        epochs: Epochs of each training run (the fine-tuning and the gradual run).
        seed: Seeds the shuffling, so a run gives the same numbers again.
    """
    config = training.TrainConfig(epochs=epochs, lr=LEARNING_RATE, seed=seed)
    masks, pruned = one_shot(model, test, sparsity=sparsity)
    total = epochs * training.steps_per_epoch(train, batch_size=config.batch_size)
    schedule = training.Gradual(
        0.0, sparsity, start=0, end=max(1, round(total * GRADUAL_SHARE)), kind="cubic"
    )
    tuned, tuned_history = training.finetune(model, masks, train, config=config)
    grown, gradual_history = training.prune_while_training(
        model, train, strategy=STRATEGY, schedule=schedule, config=config
    )
    accuracy = ("accuracy",)
    return Recovery(
        dense=evaluate(model, test, metrics=accuracy)["accuracy"],
        one_shot=pruned,
        fine_tuned=evaluate(tuned, test, metrics=accuracy)["accuracy"],
        gradual=evaluate(grown, test, metrics=accuracy)["accuracy"],
        sparsity=masks.sparsity(),
        steps=total,
        histories={"fine-tuned": tuned_history, "gradual": gradual_history},
    )


def recovery_figure(accuracies: dict[str, float], *, dense: float) -> go.Figure:
    """Test accuracy per method, the dense model's as a dashed line
    (:func:`prunelab.figures.compare_bars`)."""
    return figures.compare_bars(accuracies, dense=dense, title="Test accuracy at the same sparsity")
