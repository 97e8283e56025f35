"""Training options and progress: :class:`TrainConfig` and :class:`TrainProgress`.

The argument checks here are shared by the schedules and the freezing helpers of this package.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..runtime.checks import check_count, check_number

__all__ = ["LM_CONFIG", "LM_SEQUENCES", "OPTIMIZERS", "TrainConfig", "TrainProgress"]

OPTIMIZERS = ("sgd", "adam")


def _names(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a sequence of layer names or patterns, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: budget, optimizer, batches, seed, frozen layers, activation threshold.

    The defaults (Adam at 0.003 for 3 epochs) recover most of the accuracy of the sample
    models pruned to 90% in about a second on a laptop CPU.

    Attributes:
        epochs: Passes over the training data (> 0).
        lr: Learning rate (> 0).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty; pruned weights stay zero regardless.
        batch_size: Batch size when the data is not already a DataLoader.
        seed: Seeds shuffling, random regrowth and random strategies.
        frozen: Module or parameter names (glob patterns allowed, e.g. ``"fc1"`` or
            ``"features.*"``) whose parameters are not trained; checked bit-identical after.
        activation_layers: Layers whose activations are thresholded during training (names
            as in :func:`prunelab.activations.activation_threshold`).
        activation_threshold: Activations with a smaller magnitude are zeroed there.

    >>> TrainConfig(epochs=2, optimizer="sgd", lr=0.05).momentum
    0.9
    """

    epochs: int = 3
    lr: float = 0.003
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    frozen: tuple[str, ...] = ()
    activation_layers: tuple[str, ...] = ()
    activation_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_count(self.epochs, what="epochs")
        check_count(self.batch_size, what="batch_size")
        for name in ("lr", "momentum", "weight_decay", "activation_threshold"):
            check_number(getattr(self, name), what=name, minimum=0, strict=name == "lr")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "frozen", _names(self.frozen, "frozen"))
        object.__setattr__(
            self, "activation_layers", _names(self.activation_layers, "activation_layers")
        )


@dataclass(frozen=True)
class TrainProgress:
    """What a training callback receives after every optimizer step.

    Attributes:
        step: The step just done (0-based, as in the history and the schedules).
        total: Steps in the whole run.
        epoch: The epoch this step belongs to (0-based).
        loss: Mean cross-entropy of this batch (per scored token, for a language model).
        accuracy: Accuracy on this batch (next-token accuracy, for a language model).
        sparsity: Sparsity of the masks in force at this step.
    """

    step: int
    total: int
    epoch: int
    loss: float
    accuracy: float
    sparsity: float

    @property
    def fraction(self) -> float:
        """Share of the run done after this step."""
        return (self.step + 1) / self.total

    @property
    def message(self) -> str:
        done = self.step + 1
        return f"step {done}/{self.total}, loss {self.loss:.3f}, sparsity {self.sparsity:.0%}"


Callback = Callable[[TrainProgress], None]

# A language model's defaults, for the app's Train page and `prunelab finetune`: one pass over
# 256 sequences of the sample text in batches of 16 is 16 steps, a few seconds per run on a
# laptop CPU (each step sees 2,048 tokens), and already wins back part of the perplexity lost
# at 70% sparsity; Adam at 0.003 overshoots.
LM_SEQUENCES = 256
LM_CONFIG = TrainConfig(epochs=1, lr=0.001, batch_size=16)


def _train_config(config: TrainConfig | None) -> TrainConfig:
    """``config``, or the defaults for None; anything else is refused before any copying."""
    if config is None:
        return TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return config
