"""Perplexity after pruning whole attention heads of the sample language model: head-magnitude
(weight norms, no data) against head-taylor (|dL/d head gate| on calibration data, Michel et
al., 2019), with seeded random heads as the floor.

Run: ``uv run python benchmarks/bench_heads.py [--calibration 64] [--test 0]``

Model ``sample:pydoc-gpt`` (4-layer Hugging Face GPT-2, 4 heads a layer: 16 heads, recognised
by :func:`prunelab.core.heads.attention_layers` as ``c_attn``/``c_proj``). Data
``sample:pydoc-text`` with the model's tokenizer, 128-token sequences: head-taylor's scores come
from the first ``--calibration`` sequences of the *train* split (batches of 16); every
perplexity is measured on the *test* split (``--test 0``: all of it), so no head is chosen on
the text it is judged on. Both strategies rank the heads globally (``scope="global"``, the
paper's choice after each layer's scores are divided by their L2 norm); ``scope="layer"``
variants prune the same fraction in every layer. Random: the mean of five seeded draws of
heads (global, at least one head kept per layer, as the strategies do). One torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prunelab
from prunelab.core.heads import heads_of, masks_for_heads, select_heads
from prunelab.io import data as datasets

SPARSITIES = (0.25, 0.5)
SEEDS = 5


def perplexity(model, data, masks=None) -> float:
    return float(prunelab.evaluate(model, data, masks=masks, metrics=("perplexity",))["perplexity"])


def pruned(model, masks) -> str:
    """``h.layer.head`` of every pruned head, e.g. ``2.0 2.1``."""
    names = []
    for fqn, kept in heads_of(model, masks).items():
        layer = fqn.split(".")[2]
        names += [f"{layer}.{h}" for h in range(len(kept)) if not bool(kept[h])]
    return " ".join(names)


def random_heads(model, test, sparsity: float) -> float:
    shapes = {fqn: len(kept) for fqn, kept in heads_of(model, prunelab.Masks({})).items()}
    results = []
    for seed in range(SEEDS):
        g = torch.Generator().manual_seed(seed)
        scores = {fqn: torch.rand(n, generator=g) for fqn, n in shapes.items()}
        heads = select_heads(scores, sparsity=sparsity, scope="global")
        results.append(perplexity(model, test, masks_for_heads(model, heads)))
    return sum(results) / len(results)


def sample(calibration: int, test: int) -> tuple:
    """pydoc-gpt, its first ``calibration`` train sequences and ``test`` test ones (0: all)."""
    bundle = prunelab.zoo.load("sample:pydoc-gpt")
    splits = []
    for split, limit in (("train", calibration), ("test", test)):
        spec = f"sample:pydoc-text?limit={limit}" if limit else "sample:pydoc-text"
        splits.append(datasets.load(spec, split=split, tokenizer=bundle.tokenizer))
    return bundle.model.eval(), *splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=64, help="train sequences")
    parser.add_argument("--test", type=int, default=0, help="test sequences (0: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the app runs
    start = time.perf_counter()
    model, calib, test = sample(args.calibration, args.test)
    calibration = prunelab.Calibration(model, calib, batches=len(calib), batch_size=16)
    dense = perplexity(model, test)
    print(f"# calibration {len(calib)} train sequences, test {len(test)}; dense {dense:.2f}")
    strategies = {
        "head-magnitude": prunelab.get_strategy("head-magnitude"),
        "head-taylor": prunelab.get_strategy("head-taylor"),
        "head-magnitude, per layer": prunelab.get_strategy("head-magnitude", scope="layer"),
        "head-taylor, per layer": prunelab.get_strategy("head-taylor", scope="layer"),
    }
    rows = {}
    for label, strategy in strategies.items():
        t0 = time.perf_counter()
        pruner = prunelab.Pruner(model, strategy, calibration=calibration)
        scored = time.perf_counter() - t0
        row = {"scoring s": scored}
        for sparsity in SPARSITIES:
            masks = pruner.masks(sparsity=sparsity)
            row[sparsity] = perplexity(model, test, masks)
            row[f"heads {sparsity}"] = pruned(model, masks)
        rows[label] = row
        print(f"# {label}: {row}", flush=True)
    rows["random heads (mean of 5 seeds)"] = {s: random_heads(model, test, s) for s in SPARSITIES}
    print(
        f"\nDense perplexity {dense:.2f} on {len(test)} test sequences of 128 tokens; "
        f"head-taylor calibrated on {len(calib)} train sequences.\n"
    )
    print("| heads pruned by | 25% (4 of 16) | 50% (8 of 16) | scoring |")
    print("|---|---|---|---|")
    for label, row in rows.items():
        took = f"{row['scoring s']:.2f} s" if "scoring s" in row else "-"
        print(f"| {label} | {row[0.25]:.2f} | {row[0.5]:.2f} | {took} |")
    print()
    for label, row in rows.items():
        if "heads 0.5" in row:
            print(f"# {label} prunes at 25%: {row['heads 0.25']}; at 50%: {row['heads 0.5']}")
    print(f"# total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
