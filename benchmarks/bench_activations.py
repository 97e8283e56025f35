"""Activation statistics vs a plain forward pass: time overhead and memory kept.

Run: ``uv run python benchmarks/bench_activations.py [--batch 16] [--repeats 7] [--threads 1]
[--breakdown]``

Both timings are measured in this process, on the same inputs, without gradients: the
baseline is the plain forward pass as ``activation_stats`` runs it (``functional_forward``
on one structural copy of the model), ours is ``prunelab.activations.stats.activation_stats`` with
its default layers. The two alternate, and each is the fastest of ``--repeats`` runs (on a
shared machine the fastest run is the one least disturbed; CPU time, also printed, is less
sensitive to other load). One CPU thread by default: where other processes share the cores,
multi-threaded runs of many small operations mostly measure the scheduler (``--threads 0``
uses torch's default). Each line prints the overhead (ours / baseline - 1) against the goal
of at most 15%, and the memory the statistics keep next to what storing the activations
would take.

``--breakdown`` also splits the digits-cnn overhead into its parts, each measured as a
forward pass over the same layers: with hooks that do nothing (the cost of the hooks
themselves), ``activation_stats`` up to its results (hooks that take each batch's sample,
``ChannelStats.update``: the copies), and the full ``activation_stats`` (the rest is
reducing the samples and building the results). It also times the same ``update`` calls
on copies of the same activations in a loop, outside the forward pass, next to it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from unittest import mock

import torch

import prunelab
from prunelab.activations.stats import (
    BINS,
    SAMPLE,
    ChannelStats,
    _stream,
    activation_layers,
    activation_stats,
    forward_hooks,
)
from prunelab.runtime.batches import iter_batches
from prunelab.runtime.functional import functional_forward, structural_copy

GOAL = 0.15


def _forward(model: torch.nn.Module, data: object, *, idle_hooks: bool = False) -> None:
    """The forward pass as ``activation_stats`` runs it (on one structural copy, without
    gradients), optionally with a hook that does nothing on each of its default layers."""
    shell = structural_copy(model)
    hooks = dict.fromkeys(activation_layers(model) if idle_hooks else (), lambda *_: None)
    with torch.no_grad(), forward_hooks(shell, hooks):
        for batch in iter_batches(data):
            functional_forward(shell, {}, batch.inputs, private=True)


def _stream_only(model: torch.nn.Module, data: object) -> None:
    """``activation_stats`` up to its results: hooks that take every batch's sample."""
    _stream(model, data, None, None, BINS, SAMPLE, None)


def _replay_updates(model: torch.nn.Module, data: object) -> Callable[[], None]:
    """A function repeating the ``ChannelStats.update`` calls of one ``activation_stats`` pass
    on fresh accumulators, on copies of the same activations: the same sample copies, but
    in a loop, outside the forward pass."""
    calls = []
    update = ChannelStats.update

    def record(self: ChannelStats, activation: torch.Tensor, *, axis: int) -> None:
        calls.append((id(self), activation.clone(), axis))
        update(self, activation, axis=axis)

    with mock.patch.object(ChannelStats, "update", record):
        _stream(model, data, None, None, BINS, SAMPLE, None)

    def replay() -> None:
        fresh: dict[int, ChannelStats] = {}
        for key, activation, axis in calls:
            fresh.setdefault(key, ChannelStats()).update(activation, axis=axis)

    return replay


def _fastest(*fns: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Fastest wall and CPU (process) time of each function, run in turn."""
    for fn in fns:
        fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[index].append(time.perf_counter() - start)
            cpu[index].append(time.process_time() - start_cpu)
    return [min(times) for times in wall], [min(times) for times in cpu]


def _activation_bytes(stats: prunelab.activations.stats.ActivationStats) -> int:
    return sum(s.count * s.channels * 4 for s in stats.values())  # float32, every value


def _line(label: str, wall: list[float], cpu: list[float], *, goal: bool = True) -> bool:
    """Print the overhead of ``wall[1]`` over ``wall[0]`` (and the verdict, for a goal)."""
    overhead, overhead_cpu = wall[1] / wall[0] - 1, cpu[1] / cpu[0] - 1
    met = overhead <= GOAL
    verdict = f"  goal <= {GOAL:.0%}: {'met' if met else 'NOT met'}" if goal else ""
    print(
        f"{label:<40} overhead {overhead:+7.1%} wall ({wall[1] * 1e3:7.1f} vs "
        f"{wall[0] * 1e3:7.1f} ms), {overhead_cpu:+7.1%} CPU time{verdict}",
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
    parser.add_argument(
        "--breakdown", action="store_true", help="split the digits-cnn overhead into its parts"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    all_met = True

    bundle = prunelab.io.zoo.load("sample:digits-cnn")
    digits = prunelab.io.data.load("sample:digits", split="test")
    inputs = digits.inputs  # plain tensors: time the model, not the Dataset's collation
    wall, cpu = _fastest(
        lambda: _forward(bundle.model, inputs),
        lambda: activation_stats(bundle.model, inputs),
        repeats=args.repeats,
    )
    all_met &= _line(f"digits-cnn, digits test set ({len(inputs)})", wall, cpu)
    if args.breakdown:
        wall, cpu = _fastest(
            lambda: _forward(bundle.model, inputs),
            lambda: _forward(bundle.model, inputs, idle_hooks=True),
            lambda: _stream_only(bundle.model, inputs),
            lambda: activation_stats(bundle.model, inputs),
            _replay_updates(bundle.model, inputs),
            repeats=args.repeats,
        )
        parts = ("hooks that do nothing", "hooks taking the samples", "activation_stats")
        for index, part in enumerate(parts, start=1):
            _line(f"  {part}", [wall[0], wall[index]], [cpu[0], cpu[index]], goal=False)
        print(
            f"  {'the same sample copies, in a loop':<38} {wall[4] / wall[0]:+7.1%} of the "
            f"forward pass ({wall[4] * 1e3:.2f} ms): what they cost outside it",
            flush=True,
        )
    _memory("digits-cnn memory", bundle.model, inputs, torch.cat([inputs] * 4))

    resnet = prunelab.io.zoo.load("torchvision:resnet18").model
    batch = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    wall, cpu = _fastest(
        lambda: _forward(resnet, batch),
        lambda: activation_stats(resnet, batch),
        repeats=args.repeats,
    )
    all_met &= _line(f"torchvision resnet18, batch {args.batch}", wall, cpu)
    _memory("resnet18 memory", resnet, batch[:4], batch)
    return 0 if all_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
