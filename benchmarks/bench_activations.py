"""Activation statistics vs a plain forward pass: time overhead and memory kept.

Run: ``uv run python benchmarks/bench_activations.py [--batch 16] [--repeats 5]``

Both timings are measured in this process, on the same inputs, without gradients: the
baseline is the plain forward pass (``functional_forward``, as ``activation_stats`` runs it),
ours is ``prunelab.activations.activation_stats`` with its default layers. Each line prints the
overhead (ours / baseline - 1) against the goal of at most 15%, and the memory the statistics
keep next to the memory that storing the activations would take.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time

import prunelab
from prunelab.activations import activation_stats
from prunelab.batches import iter_batches
from prunelab.functional import functional_forward

GOAL = 0.15


def _plain(model: torch.nn.Module, data: object) -> None:
    with torch.no_grad():
        for batch in iter_batches(data):
            functional_forward(model, {}, batch.inputs)


def _activation_bytes(stats: prunelab.activations.ActivationStats) -> int:
    return sum(s.count * s.channels * 4 for s in stats.values())  # float32, every value


def _line(label: str, ours: float, baseline: float) -> bool:
    overhead = ours / baseline - 1
    met = overhead <= GOAL
    print(
        f"{label:<44} overhead {overhead:+7.1%} vs plain forward  (stats {ours * 1e3:8.1f} ms, "
        f"plain {baseline * 1e3:8.1f} ms)  goal <= {GOAL:.0%}: {'met' if met else 'NOT met'}",
        flush=True,
    )
    return met


def _memory(label: str, model: torch.nn.Module, data: object, more: object) -> None:
    stats = activation_stats(model, data)
    bigger = activation_stats(model, more)
    print(
        f"{label:<44} kept {stats.nbytes() / 1e3:9.1f} kB for {stats.samples} samples, "
        f"{bigger.nbytes() / 1e3:9.1f} kB for {bigger.samples}; storing the activations: "
        f"{_activation_bytes(stats) / 1e6:9.1f} MB and {_activation_bytes(bigger) / 1e6:9.1f} MB",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="ResNet-18 batch size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    all_met = True

    bundle = prunelab.zoo.load("sample:digits-cnn")
    digits = prunelab.data.load("sample:digits", split="test")
    inputs = digits.inputs  # plain tensors: time the model, not the Dataset's collation
    plain = median_time(lambda: _plain(bundle.model, inputs), repeats=args.repeats)
    ours = median_time(lambda: activation_stats(bundle.model, inputs), repeats=args.repeats)
    all_met &= _line(f"digits-cnn, digits test set ({len(inputs)})", ours, plain)
    _memory("digits-cnn memory", bundle.model, inputs, torch.cat([inputs] * 4))

    resnet = prunelab.zoo.load("torchvision:resnet18").model
    batch = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    _plain(resnet, batch)  # warm-up
    plain = median_time(lambda: _plain(resnet, batch), repeats=args.repeats)
    ours = median_time(lambda: activation_stats(resnet, batch), repeats=args.repeats)
    all_met &= _line(f"torchvision resnet18, batch {args.batch}", ours, plain)
    _memory("resnet18 memory", resnet, batch[:4], batch)
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
