"""Mask computation vs torch.nn.utils.prune on torchvision's ResNet-50 (random weights).

Run: ``uv run python benchmarks/bench_masks.py [--arch resnet50] [--repeats 3]``

Prints one line per comparison with the ratio baseline_time / prunelab_time, both measured in
this process. The baselines run on a fresh deep copy each time (the copy is not timed).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time, report

import prunelab


def _pairs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(model.get_submodule(t.module_fqn), t.param_name) for t in prunelab.targets(model)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.arch, weights=None).eval()
    n = sum(t.numel for t in prunelab.targets(model))
    print(
        f"{args.arch}: {len(prunelab.targets(model))} prunable tensors, {n:,} weights; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    fresh: dict[str, nn.Module] = {}

    def new_copy() -> None:
        fresh["model"] = copy.deepcopy(model)

    all_met = True

    # -- global magnitude at 50% ----------------------------------------------------------
    def torch_global() -> None:
        torch_prune.global_unstructured(
            _pairs(fresh["model"]), torch_prune.L1Unstructured, amount=0.5
        )

    baseline = median_time(torch_global, setup=new_copy, repeats=args.repeats)
    first = median_time(
        lambda: prunelab.Pruner(model, "global-magnitude").masks(sparsity=0.5),
        repeats=args.repeats,
    )
    all_met &= report(
        "global-magnitude 50%: first mask", first, baseline, "prune.global_unstructured", goal=15
    )
    pruner = prunelab.Pruner(model, "global-magnitude")
    levels = iter([0.3 + 0.01 * i for i in range(1000)])
    slider = median_time(lambda: pruner.masks(sparsity=next(levels)), repeats=10)
    all_met &= report(
        "global-magnitude: slider move (new sparsity)",
        slider,
        baseline,
        "prune.global_unstructured",
        goal=60,
    )

    # -- layerwise magnitude --------------------------------------------------------------
    def torch_layer() -> None:
        for module, name in _pairs(fresh["model"]):
            torch_prune.l1_unstructured(module, name, amount=0.5)

    baseline = median_time(torch_layer, setup=new_copy, repeats=args.repeats)
    first = median_time(
        lambda: prunelab.Pruner(model, "layer-magnitude").masks(sparsity=0.5),
        repeats=args.repeats,
    )
    report("layer-magnitude 50%: first mask", first, baseline, "prune.l1_unstructured per layer")
    pruner = prunelab.Pruner(model, "layer-magnitude")
    slider = median_time(lambda: pruner.masks(sparsity=next(levels)), repeats=10)
    report("layer-magnitude: slider move", slider, baseline, "prune.l1_unstructured per layer")

    # -- channel norms (L2, output channels) ---------------------------------------------
    def torch_channels() -> None:
        for module, name in _pairs(fresh["model"]):
            torch_prune.ln_structured(module, name, amount=0.5, n=2, dim=0)

    baseline = median_time(torch_channels, setup=new_copy, repeats=args.repeats)
    strategy = prunelab.get_strategy("weight-norm-channel", p=2)
    first = median_time(
        lambda: prunelab.Pruner(model, strategy).masks(sparsity=0.5), repeats=args.repeats
    )
    report(
        "weight-norm-channel L2 50%: first mask", first, baseline, "prune.ln_structured per layer"
    )
    pruner = prunelab.Pruner(model, strategy)
    slider = median_time(lambda: pruner.masks(sparsity=next(levels)), repeats=10)
    report("weight-norm-channel: slider move", slider, baseline, "prune.ln_structured per layer")
    print("all goals met" if all_met else "SOME GOALS NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
