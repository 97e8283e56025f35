"""Activation statistics vs a plain forward pass: time overhead and memory kept.

Run: ``uv run python benchmarks/bench_activations.py [--batch 16] [--repeats 7] [--threads 1]``

Both timings are measured in this process, on the same inputs, without gradients: the
baseline is the plain forward pass (``functional_forward``, as ``activation_stats`` runs it),
ours is ``prunelab.activations.activation_stats`` with its default layers. The two alternate,
and each is the fastest of ``--repeats`` runs (on a shared machine the fastest run is the one
least disturbed; CPU time, also printed, is less sensitive to other load). One CPU thread by
default: where other processes share the cores, multi-threaded runs of many small operations
mostly measure the scheduler (``--threads 0`` uses torch's default). Each line prints
the overhead (ours / baseline - 1) against the goal of at most 15%, and the memory the
statistics keep next to what storing the activations would take.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import prunelab
from prunelab.activations import activation_stats
from prunelab.batches import iter_batches
from prunelab.functional import functional_forward

GOAL = 0.15


def _plain(model: torch.nn.Module, data: object) -> None:
    with torch.no_grad():
        for batch in iter_batches(data):
            functional_forward(model, {}, batch.inputs)


def _fastest(first: Callable[[], object], second: Callable[[], object], repeats: int):
    """Fastest wall and CPU (process) time of each of two functions, run alternately."""
    first(), second()
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for index, fn in enumerate((first, second)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[index].append(time.perf_counter() - start)
            cpu[index].append(time.process_time() - start_cpu)
    return (min(wall[0]), min(wall[1])), (min(cpu[0]), min(cpu[1]))


def _activation_bytes(stats: prunelab.activations.ActivationStats) -> int:
    return sum(s.count * s.channels * 4 for s in stats.values())  # float32, every value


def _line(label: str, wall: tuple[float, float], cpu: tuple[float, float]) -> bool:
    overhead, overhead_cpu = wall[1] / wall[0] - 1, cpu[1] / cpu[0] - 1
    met = overhead <= GOAL
    print(
        f"{label:<40} overhead {overhead:+7.1%} wall ({wall[1] * 1e3:7.1f} vs "
        f"{wall[0] * 1e3:7.1f} ms), {overhead_cpu:+7.1%} CPU time  goal <= {GOAL:.0%}: "
        f"{'met' if met else 'NOT met'}",
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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    all_met = True

    bundle = prunelab.zoo.load("sample:digits-cnn")
    digits = prunelab.data.load("sample:digits", split="test")
    inputs = digits.inputs  # plain tensors: time the model, not the Dataset's collation
    wall, cpu = _fastest(
        lambda: _plain(bundle.model, inputs),
        lambda: activation_stats(bundle.model, inputs),
        args.repeats,
    )
    all_met &= _line(f"digits-cnn, digits test set ({len(inputs)})", wall, cpu)
    _memory("digits-cnn memory", bundle.model, inputs, torch.cat([inputs] * 4))

    resnet = prunelab.zoo.load("torchvision:resnet18").model
    batch = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    wall, cpu = _fastest(
        lambda: _plain(resnet, batch), lambda: activation_stats(resnet, batch), args.repeats
    )
    all_met &= _line(f"torchvision resnet18, batch {args.batch}", wall, cpu)
    _memory("resnet18 memory", resnet, batch[:4], batch)
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
