"""Per-layer sensitivity: prunelab vs the naive loop, same data, same grid, same numbers.

Run: ``uv run python benchmarks/bench_sensitivity.py [--levels 9]``

The naive loop, per (layer, sparsity): deepcopy the model, prune the layer with
``torch.nn.utils.prune.l1_unstructured``, evaluate on the full data. prunelab: masks through
``functional_call`` on one model and prefix caching. Models: sample:digits-resnet on the digits
test set, and torchvision's ResNet-18 (random weights) on 512 random 3x32x32 inputs judged by
agreement with the dense model. Both are warmed up first; only ratios are claimed. The cost
of checkpointing is its own work (hashes, one flushed line per row) against the plain run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prunelab
from prunelab.analysis import evaluate
from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.runtime.batches import iter_batches
from prunelab.sweeps import RunOptions, SensitivityConfig, sensitivity
from prunelab.sweeps.checkpoints import RowLog, data_digest, tensor_digest


def naive(model, data, levels, metric):
    values = []
    for target in prunelab.targets(model):
        for level in levels:
            pruned = copy.deepcopy(model)
            module = pruned.get_submodule(target.module_fqn)
            torch_prune.l1_unstructured(module, target.param_name, amount=level)
            if metric == "accuracy":
                values.append(evaluate(pruned, data, metrics=("accuracy",))["accuracy"])
            else:  # fidelity: compare with the dense model's outputs
                values.append(
                    evaluate(model, data, masks=_masks_of(pruned, model), metrics=("agreement",))[
                        "agreement"
                    ]
                )
    return np.array(values)


def _masks_of(pruned, model):
    masks = {}
    for target in prunelab.targets(model):
        module = pruned.get_submodule(target.module_fqn)
        mask = getattr(module, target.param_name + "_mask", None)
        if mask is not None:
            masks[target.fqn] = mask.bool()
    return prunelab.Masks(masks)


def len_of(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def checkpoint_cost(model, data, table, path) -> float:
    """Seconds a checkpoint adds to a run: the fingerprint's hashes and one line per row."""
    start = time.perf_counter()
    fingerprint = {
        "model": tensor_digest(model.state_dict().items()),
        "data": data_digest(iter_batches(data, batch_size=256))[0],
    }
    keys = [{}] * len(table)
    with RowLog.open(path, kind="sensitivity", keys=keys, fingerprint=fingerprint) as log:
        for index, row in enumerate(table.to_dict("records")):
            log.add(index, row)
        log.finish(table.attrs)
    return time.perf_counter() - start


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare(label, model, data, levels, metric):
    naive(model, data, levels[:1], metric)  # warm-up: kernels, caches, dense outputs
    sensitivity(model, data, sparsities=levels[:1], config=SensitivityConfig(metric=metric))
    expected, t_naive = timed(lambda: naive(model, data, levels, metric))
    table, t_ours = timed(
        lambda: sensitivity(model, data, sparsities=levels, config=SensitivityConfig(metric=metric))
    )
    same = np.allclose(table[metric].to_numpy(), expected, atol=1e-9)
    print(
        f"{label:<26} full grid:   {t_naive / t_ours:5.1f}x faster than the naive loop "
        f"(goal >= 2x), identical numbers: {same}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        # the forward passes are the same code with or without a checkpoint (and on a busy
        # machine their time varies more than the checkpoint costs): time its own work
        t_bookkeeping = checkpoint_cost(model, data, table, Path(folder) / "alone.jsonl")
        saved = sensitivity(
            model,
            data,
            sparsities=levels,
            config=SensitivityConfig(metric=metric),
            run=RunOptions(checkpoint=path),
        )
        again, t_again = timed(
            lambda: sensitivity(
                model,
                data,
                sparsities=levels,
                config=SensitivityConfig(metric=metric),
                run=RunOptions(checkpoint=path, resume=True),
            )
        )
    print(
        f"{label:<26} checkpoint: hashing model and data and {len(table)} flushed rows take "
        f"{t_bookkeeping * 1e3:.1f} ms, {t_bookkeeping / t_ours:.2%} of the plain run (goal "
        f"<= 5%); resuming it once finished: {t_ours / t_again:,.0f}x faster than the run; "
        f"same table: {saved.equals(table) and again.equals(table)}",
        flush=True,
    )
    quick, t_quick = timed(
        lambda: sensitivity(
            model,
            data,
            sparsities=levels,
            config=SensitivityConfig(metric=metric, subset=64, early_stop=0.1),
        )
    )
    print(
        f"{label:<26} subset 64 + early stop 0.1: {t_naive / t_quick:5.1f}x faster than the "
        f"naive loop (goal >= 8x); {int(quick['evaluated'].sum())} of {len(quick)} points, "
        f"64 of {quick.attrs['samples'] and len_of(data)} samples",
        flush=True,
    )
    many = [i / 100 for i in range(1, 101)]
    _, t_proxy = timed(
        lambda: sensitivity(model, sparsities=many, config=SensitivityConfig(method="magnitude"))
    )
    layers = len(prunelab.targets(model))
    print(
        f"{label:<26} magnitude proxy, {layers} layers x 100 levels: {t_proxy * 1e3:.0f} ms, "
        f"{t_naive / t_proxy:,.0f}x faster than the naive loop's {len(levels)} levels",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=9)
    args = parser.parse_args(argv)
    levels = [round((i + 1) / (args.levels + 1), 4) for i in range(args.levels)]
    torch.manual_seed(0)
    bundle = zoo.load("sample:digits-resnet")
    compare(
        "sample:digits-resnet", bundle.model, data_lib.load("sample:digits"), levels, "accuracy"
    )
    import torchvision

    resnet = torchvision.models.resnet18(num_classes=10).eval()
    inputs = torch.rand(512, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    compare("torchvision:resnet18 32px", resnet, inputs, levels[::3], "agreement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
