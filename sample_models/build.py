"""Train the sample models shipped with prunelab, deterministically, on the CPU.

Writes ``<name>.pt`` (a state_dict) and ``<name>.json`` (its model card) for each model into
this directory (or ``--out``). Training is seeded, single-threaded and uses
``torch.use_deterministic_algorithms(True)``, so two runs on one machine give identical
weights (other CPUs or torch versions may differ in the last bits).

Usage::

    uv run python sample_models/build.py                      # all models, a few minutes
    uv run python sample_models/build.py --only digits-mlp    # one model
    uv run python sample_models/build.py --epochs 2 --out /tmp/x   # a shortened run
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import prunelab
from prunelab.io import data as pdata
from prunelab.io.architectures import ARCHITECTURES
from prunelab.runtime.files import atomic_write

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Recipe:
    """How one sample model is trained."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    optimizer: str = "AdamW"
    schedule: str = "cosine annealing to 0 over all steps"
    loss: str = "cross-entropy"


RECIPES = {
    "digits-mlp": Recipe(epochs=40, lr=1e-3),
    "digits-cnn": Recipe(epochs=40, lr=2e-3),
    "digits-resnet": Recipe(epochs=30, lr=3e-3),
    "sentiment-lstm": Recipe(epochs=25, lr=3e-3),
}

DATA_DESCRIPTIONS = {
    "sample:digits": (
        "scikit-learn's bundled copy of the UCI ML handwritten digits (8x8 images, 1797 in "
        "all), pixels divided by 16 to lie in [0, 1], shaped 1x8x8. Fixed split: "
        "sklearn.model_selection.train_test_split(test_size=0.25, random_state=0, "
        "stratify=labels): 1347 train, 450 test images."
    ),
    "sample:sentiment": (
        "SYNTHETIC data, generated deterministically by prunelab.data (random.Random(0)): "
        "short review-like sentences from a fixed vocabulary of positive, negative and neutral "
        "words, with negation ('not good' is negative, 'not bad' positive), intensifiers and "
        "contrast ('... but ...' takes the polarity of the second clause). 3000 train and 1000 "
        "test sentences, none in both; token ids of length 16, left-padded with 0. It is not "
        "real text: accuracy on it says nothing about real reviews."
    ),
}


def _accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predictions = model.eval()(inputs).argmax(dim=1)
    return float((predictions == labels).float().mean())


def train(name: str, recipe: Recipe) -> tuple[nn.Module, dict]:
    """Train one sample model; returns the model (eval mode) and its measured accuracies."""
    arch = ARCHITECTURES[name]
    train_set = pdata.load(arch.data, split="train")
    test_set = pdata.load(arch.data, split="test")
    torch.manual_seed(recipe.seed)
    model = arch.factory()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=recipe.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    for _ in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator)
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss = F.cross_entropy(model(train_set.inputs[index]), train_set.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    results = {
        "train_accuracy": _accuracy(model, train_set.inputs, train_set.labels),
        "test_accuracy": _accuracy(model, test_set.inputs, test_set.labels),
        "train_size": len(train_set),
        "test_size": len(test_set),
    }
    return model, results


def bag_of_words_baseline() -> float:
    """Test accuracy of a logistic regression on word counts (word order ignored).

    It shows how much of the synthetic sentiment task needs word order (negation, "but").
    """
    from sklearn.linear_model import LogisticRegression

    size = len(pdata.sentiment_vocabulary())

    def counts(tokens: torch.Tensor) -> torch.Tensor:
        table = torch.zeros(len(tokens), size)
        table.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))
        table[:, 0] = 0  # padding
        return table

    train_set = pdata.load("sample:sentiment", split="train")
    test_set = pdata.load("sample:sentiment", split="test")
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(counts(train_set.inputs).numpy(), train_set.labels.numpy())
    return float(classifier.score(counts(test_set.inputs).numpy(), test_set.labels.numpy()))


def card(name: str, recipe: Recipe, model: nn.Module, results: dict, weights: bytes) -> dict:
    arch = ARCHITECTURES[name]
    return {
        "name": name,
        "spec": f"sample:{name}",
        "description": arch.description,
        "architecture": {
            "class": f"prunelab.io.architectures.{arch.model_class.__name__}",
            "summary": str(model).splitlines(),
        },
        "input": {
            "shape": list(arch.input_shape),
            "dtype": str(arch.input_dtype).removeprefix("torch."),
        },
        "task": "classification",
        "class_names": list(arch.class_names),
        "data": {
            "spec": arch.data,
            "synthetic": arch.data == "sample:sentiment",
            "description": DATA_DESCRIPTIONS[arch.data],
            "train_size": results["train_size"],
            "test_size": results["test_size"],
        },
        "training": {
            **asdict(recipe),
            "deterministic": "torch.use_deterministic_algorithms(True), 1 thread, seeded",
            "device": "cpu",
        },
        "test_accuracy": round(results["test_accuracy"], 6),
        "train_accuracy": round(results["train_accuracy"], 6),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": {"file": f"{name}.pt", "sha256": hashlib.sha256(weights).hexdigest()},
        "built_with": {"torch": torch.__version__, "prunelab": prunelab.__version__},
        "rebuild": f"uv run python sample_models/build.py --only {name}",
    }


def arch_data(name: str) -> str:
    return ARCHITECTURES[name].data


def build(name: str, *, out: Path, epochs: int | None = None) -> dict:
    """Train ``name`` and write its weights and card into ``out``; returns the card."""
    recipe = RECIPES[name]
    if epochs is not None:
        recipe = Recipe(**{**asdict(recipe), "epochs": epochs})
    model, results = train(name, recipe)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    model_card = card(name, recipe, model, results, weights)
    if arch_data(name) == "sample:sentiment":
        model_card["data"]["bag_of_words_baseline_accuracy"] = round(bag_of_words_baseline(), 4)
    with atomic_write(out / f"{name}.pt") as handle:
        handle.write(weights)
    with atomic_write(out / f"{name}.json", "w") as handle:
        json.dump(model_card, handle, indent=2)
        handle.write("\n")
    return model_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(RECIPES), help="models to build")
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs (shortened run)")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    total = time.perf_counter()
    for name in args.only or list(RECIPES):
        start = time.perf_counter()
        model_card = build(name, out=args.out, epochs=args.epochs)
        print(
            f"{name:15s} test accuracy {model_card['test_accuracy']:.2%}  "
            f"params {model_card['parameters']:>7,}  {time.perf_counter() - start:6.1f}s",
            flush=True,
        )
    print(f"built in {time.perf_counter() - total:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
