"""Accuracy recovered by fine-tuning after pruning, against the dense model and one-shot.

Run: ``uv run python benchmarks/bench_finetune.py [--model sample:digits-mlp] [--sparsity 0.9]``

Trains on the train split of the model's data and measures on the test split. Prints one row
per method: test accuracy, its gap to the dense model (the baseline, measured in this run) and
the training time. All runs use ``TrainConfig()`` (3 epochs of Adam at 0.003, seed 0) unless
``--epochs``/``--lr`` say otherwise, so the numbers reproduce exactly on a CPU.
"""

from __future__ import annotations

import argparse
import time

import prunelab
from prunelab.io import data, zoo
from prunelab.training import Gradual, TrainConfig, finetune, prune_while_training, steps_per_epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sample:digits-mlp")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument("--lr", type=float, default=TrainConfig().lr)
    args = parser.parse_args(argv)

    bundle = zoo.load(args.model)
    model = bundle.model
    train = data.load(bundle.default_data, split="train")
    test = data.load(bundle.default_data, split="test")
    config = TrainConfig(epochs=args.epochs, lr=args.lr)
    s = args.sparsity
    magnitude = prunelab.prune(model, "global-magnitude", sparsity=s)
    random = prunelab.prune(model, "random", sparsity=s, seed=0)
    end = (config.epochs - 1) * steps_per_epoch(train, batch_size=config.batch_size)

    rows: list[tuple[str, float, float]] = []

    def measure(label: str, run) -> None:
        start = time.perf_counter()
        trained = run()
        seconds = time.perf_counter() - start
        rows.append((label, prunelab.evaluate(trained, test)["accuracy"], seconds))

    rows.append(("dense (baseline)", prunelab.evaluate(model, test)["accuracy"], 0.0))
    rows.append(
        (
            f"one-shot global-magnitude {s:.0%}",
            prunelab.evaluate(model, test, masks=magnitude)["accuracy"],
            0.0,
        )
    )
    measure(
        f"global-magnitude {s:.0%} + fine-tune",
        lambda: finetune(model, magnitude, train, config=config)[0],
    )
    measure(
        f"random {s:.0%} + fine-tune",
        lambda: finetune(model, random, train, config=config)[0],
    )
    measure(
        f"gradual cubic 0 -> {s:.0%} (global-magnitude)",
        lambda: prune_while_training(
            model,
            train,
            strategy="global-magnitude",
            schedule=Gradual(0.0, s, start=0, end=end, kind="cubic"),
            config=config,
        )[0],
    )
    dense = rows[0][1]
    print(
        f"{args.model}, sparsity {s:.0%}: {config.epochs} epochs of {config.optimizer}, "
        f"lr {config.lr}"
    )
    print(f"{'method':<48} {'accuracy':>9} {'vs dense':>9} {'train s':>8}")
    for label, accuracy, seconds in rows:
        print(f"{label:<48} {accuracy:>9.2%} {(accuracy - dense) * 100:>+8.2f}p {seconds:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
