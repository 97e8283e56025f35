"""shrink vs Torch-Pruning used directly, and what shrinking buys: size and CPU latency.

Run: ``uv run python benchmarks/bench_shrink.py [--archs resnet18,resnet50] [--repeats 5]
[--threads N]``

For each torchvision architecture (random weights, input 1x3x224x224) with 50% weight-norm
channel pruning (``weight-norm-channel``), in this process:

* time to shrink: ``prunelab.shrink`` with its defaults (copy, plan, extended masks,
  Torch-Pruning, and the output check: masked and shrunk model run once each, here on one
  64x64 crop of the input since these models' outputs allow it) vs the bare Torch-Pruning
  calls that remove the same channels (dependency graph + one ``group.prune()`` per group),
  which do **not** check their result. Goal: within 2x of Torch-Pruning on a copy (timed),
  the like-for-like baseline since shrink never modifies the model it is given; the ratio to
  Torch-Pruning in place (copy not timed) and ``shrink(..., check=False)`` (no output check,
  the work Torch-Pruning does plus planning) are printed too. The variants are timed in
  interleaved rounds, so load from other processes falls on all of them alike;
* parameters of the shrunk model / dense;
* measured CPU latency / dense at batch 1 and 16 for the shrunk model (expected well below 1)
  and for the masked model (zeros in dense tensors: expected near 1), from
  ``prunelab.speed_report``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import report

import prunelab
from prunelab.core.apply import copy_model
from prunelab.shrinking.plan import _plan


def _removal(model, masks, example) -> list[tuple[str, list[int]]]:
    """(root module name, channel indices) per group, as prunelab would remove them."""
    work = copy_model(model)
    planned = _plan(work, masks, example)
    names, groups = planned.graph._module2name, planned.groups
    return [
        (names[g.group[0].dep.target.module], torch.nonzero(~g.keep).flatten().tolist())
        for g in groups
        if g.keep is not None and not bool(g.keep.all())
    ]


def _interleaved(variants: list[tuple[Callable, Callable | None]], rounds: int) -> list[float]:
    """Median wall time of each ``(fn, untimed setup)``, timed in turn in each round: on a
    shared machine the load changes over seconds, and one variant's block must not get all
    of a quiet (or busy) stretch."""
    times: list[list[float]] = [[] for _ in variants]
    for _ in range(rounds):
        for spent, (fn, setup) in zip(times, variants, strict=True):
            if setup is not None:
                setup()
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def bench(arch: str, repeats: int) -> bool:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None).eval()
    example = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    removal = _removal(model, masks, example)
    fresh: dict = {}

    def new_copy() -> None:
        fresh["model"] = copy_model(model)

    def torch_pruning_directly() -> None:
        net = fresh["model"]
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=example, verbose=False)
        for name, idxs in removal:
            module = net.get_submodule(name)
            handler = graph.get_pruner_of_module(module).prune_out_channels
            graph.get_pruning_group(module, handler, idxs).prune()

    def torch_pruning_on_a_copy() -> None:
        new_copy()
        torch_pruning_directly()

    in_place, on_copy, ours, unchecked = _interleaved(
        [
            (torch_pruning_directly, new_copy),
            (torch_pruning_on_a_copy, None),
            (lambda: prunelab.shrink(model, masks, example_input=example), None),
            (lambda: prunelab.shrink(model, masks, example_input=example, check=False), None),
        ],
        rounds=7,
    )
    seen: list[tuple[int, ...]] = []  # the inputs of the model's copies: trace, then check
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    try:
        small = prunelab.shrink(model, masks, example_input=example)
    finally:
        hook.remove()
    print(f"{arch}: graph traced on {seen[0]}, output checked on {seen[-1]}", flush=True)
    label = f"{arch}: shrink (50% channels)"
    met = report(label, ours, on_copy, "Torch-Pruning on a copy", goal=0.5)
    report(label, ours, in_place, "Torch-Pruning in place")
    report(f"{arch}: shrink without the output check", unchecked, on_copy, "TP on a copy")
    report(f"{arch}: shrink without the output check", unchecked, in_place, "TP in place")

    dense_params = sum(p.numel() for p in model.parameters())
    small_params = sum(p.numel() for p in small.parameters())
    print(f"{arch}: parameters shrunk/dense {small_params / dense_params:.3f}", flush=True)
    speed = prunelab.speed_report(
        model, masks, example_input=example, batch_sizes=(1, 16), repeats=repeats
    )
    for variant in ("shrunk", "masked"):
        rows = speed[speed["variant"] == variant]
        ratios = ", ".join(
            f"batch {b}: {r:.2f}"
            for b, r in zip(rows["batch"], rows["ratio_vs_dense"], strict=True)
        )
        print(f"{arch}: CPU latency {variant}/dense  {ratios}", flush=True)
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,resnet50")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per latency")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        # on a shared machine, fewer threads than cores keeps other load from stalling ops
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torch-pruning {tp.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        "shrink (the goal) = copy + plan + Torch-Pruning + output check (masked and shrunk "
        "model run once each); Torch-Pruning directly does not check its result, so "
        "'without the output check' (shrink(check=False)) is printed too"
    )
    results = [bench(arch.strip(), args.repeats) for arch in args.archs.split(",") if arch]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
