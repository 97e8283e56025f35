"""Activation statistics vs a bare forward pass: time ratios and the memory the statistics keep.

Run: ``uv run python benchmarks/bench_activations.py [--batch 16] [--repeats 7] [--threads 1]``

The goal (issue 17): statistics within 15% of the forward pass (a ratio of at most 1.15) on
models whose forward pass takes 50 ms or more, such as ResNet-18 (``torchvision:resnet18``,
random weights) on a batch of 16; none on tiny models, where the fixed cost of each hook and
each call into torch or numpy is as large as a layer's own work (digits-cnn on its whole test
set, a few ms, is printed for information).

Each line compares, in this process, on the same inputs and without gradients:

* the bare forward pass as ``activation_stats`` runs it (``functional_forward`` on one
  structural copy of the model, no hooks);
* exact streaming statistics, ``activation_stats(model, data, sample=None)``: every value;
* sampled statistics, ``activation_stats(model, data)``: at most ``SAMPLE`` values per channel
  and batch (the default).

The three alternate, and each time is the median of ``--repeats`` runs (wall clock; the median
CPU time of the process is printed too, as it is less sensitive to other load on a shared
machine). One CPU thread by default: where other processes share the cores, multi-threaded
runs of many small operations mostly measure the scheduler (``--threads 0`` keeps torch's
default). The exit status is 0 when the default statistics meet the goal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import prunelab
from prunelab.activations import ActivationStats, activation_stats
from prunelab.runtime.functional import functional_forward, structural_copy

GOAL = 1.15  # statistics / forward pass, at most, where the forward pass takes >= 50 ms
GOAL_FROM = 0.050  # seconds: forward passes shorter than this have no goal


def _forward(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """The forward pass as ``activation_stats`` runs it, without hooks or statistics."""
    shell = structural_copy(model)
    with torch.no_grad():
        functional_forward(shell, {}, inputs, private=True)


def _medians(fns: list[Callable[[], object]], repeats: int) -> tuple[list[float], list[float]]:
    """Median wall and CPU (process) time of each function, the functions run in turn."""
    for fn in fns:  # warm up: first calls allocate and fill caches
        fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[index].append(time.perf_counter() - start)
            cpu[index].append(time.process_time() - start_cpu)
    return [statistics.median(t) for t in wall], [statistics.median(t) for t in cpu]


def _compare(label: str, model: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> bool:
    """Print the ratios of exact and sampled statistics to the forward pass; return whether
    the default (sampled) statistics meet the goal, where the model has one."""
    wall, cpu = _medians(
        [
            lambda: _forward(model, inputs),
            lambda: activation_stats(model, inputs, sample=None),
            lambda: activation_stats(model, inputs),
        ],
        repeats,
    )
    has_goal = wall[0] >= GOAL_FROM
    print(f"{label}: forward pass {wall[0] * 1e3:.1f} ms (median of {repeats})", flush=True)
    met = True
    for index, name in ((1, "exact (sample=None)"), (2, "sampled (default)")):
        ratio, ratio_cpu = wall[index] / wall[0], cpu[index] / cpu[0]
        verdict = "no goal (forward pass under 50 ms)"
        if has_goal:
            verdict = f"goal <= {GOAL:g}x: {'met' if ratio <= GOAL else 'NOT met'}"
        print(
            f"  {name:<20} {ratio:6.2f}x the forward pass ({wall[index] * 1e3:8.1f} ms; "
            f"CPU time {ratio_cpu:.2f}x)  {verdict}",
            flush=True,
        )
        if index == 2 and has_goal:
            met = ratio <= GOAL
    return met


def _activation_bytes(stats: ActivationStats) -> int:
    return sum(s.count * s.channels * 4 for s in stats.values())  # float32, every value


def _memory(label: str, model: torch.nn.Module, data: object, more: object) -> None:
    stats = activation_stats(model, data)
    bigger = activation_stats(model, more)
    print(
        f"  {label:<18} statistics keep {stats.nbytes() / 1e3:.1f} kB for {stats.samples} "
        f"samples, {bigger.nbytes() / 1e3:.1f} kB for {bigger.samples}; storing the "
        f"activations: {_activation_bytes(stats) / 1e6:.1f} MB and "
        f"{_activation_bytes(bigger) / 1e6:.1f} MB",
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

    cnn = prunelab.io.zoo.load("sample:digits-cnn").model
    digits = prunelab.io.data.load("sample:digits", split="test").inputs  # plain tensors
    _compare(f"digits-cnn, digits test set ({len(digits)})", cnn, digits, args.repeats)
    _memory("memory:", cnn, digits, torch.cat([digits] * 4))

    resnet = prunelab.io.zoo.load("torchvision:resnet18").model
    batch = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    met = _compare(f"torchvision resnet18, batch {args.batch}", resnet, batch, args.repeats)
    _memory("memory:", resnet, batch[:4], batch)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
