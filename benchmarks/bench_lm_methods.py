"""Perplexity of magnitude, Wanda and SparseGPT on the sample language model, each with a
uniform, an OWL and the solver's per-layer allocation, at 50% and at 2:4.

Run: ``uv run python benchmarks/bench_lm_methods.py [--calibration 32] [--test 64]
[--sgpt-table own|wanda]``

Model ``sample:pydoc-gpt`` (4-layer GPT-2, its 16 block layers pruned; embeddings and the
tied head are not targets). Data ``sample:pydoc-text`` with the model's tokenizer, 128-token
sequences: calibration, the sensitivity tables and OWL's input norms use the first
``--calibration`` sequences of the *train* split; every perplexity is measured on the first
``--test`` sequences of the *test* split, so no allocation is chosen on the data it is
judged on. One torch thread (as the app runs; see bench_sparsegpt.py for why).

* uniform: every block layer at 50%;
* owl: ``sweeps.allocations.allocation("owl", ...)`` (M=5, lambda=0.08), outlier ratios from
  the calibration input norms;
* solver: a sensitivity table measured *for that method* (each layer alone at 0.3, 0.5, 0.7
  and 0.9, perplexity on the calibration sequences), then ``sweeps.solve(table,
  target_sparsity=0.5)``. SparseGPT's own table by default (``--sgpt-table wanda`` uses
  Wanda's as a proxy, faster).

Non-uniform allocations are applied as a ``Recipe(strategy=method, layers=...)`` by the same
method (SparseGPT reconstructs each layer at its own sparsity); the SparseGPT solver recipe
is also saved as YAML, read back and re-applied, and its perplexity checked equal.

2:4 is uniform only: every 2:4 layer is exactly 50% sparse, so an allocation at 50% overall
could only mix other patterns (1:4, 3:4, dense), which 2:4 sparse tensor cores do not run;
the hardware reason to choose 2:4 is gone in such a mix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prunelab
from prunelab.io import data as datasets
from prunelab.io.recipes import Recipe
from prunelab.sweeps import SensitivityConfig, sensitivity, solve
from prunelab.sweeps.allocations import allocation, layer_weights

METHODS = {"magnitude": "layer-magnitude", "wanda": "wanda", "sparsegpt": "sparsegpt"}
LEVELS = (0.3, 0.5, 0.7, 0.9)


def perplexity(model, data, masks=None) -> float:
    return float(prunelab.evaluate(model, data, masks=masks, metrics=("perplexity",))["perplexity"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=32, help="train sequences")
    parser.add_argument("--test", type=int, default=64, help="test sequences")
    parser.add_argument("--sgpt-table", choices=("own", "wanda"), default="own")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    bundle = prunelab.zoo.load("sample:pydoc-gpt")
    model = bundle.model.eval()
    calib = datasets.load(
        f"sample:pydoc-text?limit={args.calibration}", split="train", tokenizer=bundle.tokenizer
    )
    test = datasets.load(
        f"sample:pydoc-text?limit={args.test}", split="test", tokenizer=bundle.tokenizer
    )
    calibration = prunelab.Calibration(model, calib, batches=4, batch_size=16)
    dense = perplexity(model, test)
    layers = [t.fqn for t in prunelab.core.targets.targets(model)]
    weights = layer_weights(model, layers)
    owl = allocation("owl", weights, 0.5, calibration=calibration)
    print(f"# {len(layers)} layers; calibration {len(calib)} train sequences, test {len(test)}")
    print(
        f"# dense perplexity {dense:.2f}; owl range {min(owl.values()):.3f}-"
        f"{max(owl.values()):.3f}",
        flush=True,
    )
    tables: dict[str, object] = {}
    rows: dict[str, dict[str, float]] = {}
    for label, strategy in METHODS.items():
        source = "wanda" if label == "sparsegpt" and args.sgpt_table == "wanda" else label
        if source not in tables:
            t0 = time.perf_counter()
            config = SensitivityConfig(calibration=calibration, metric="perplexity")
            tables[source] = sensitivity(
                model, calib, strategy=METHODS[source], sparsities=LEVELS, config=config
            )
            print(f"# {source} table: {time.perf_counter() - t0:.0f} s", flush=True)
        solver = dict(solve(tables[source], target_sparsity=0.5).layers)
        row = {"table": source}
        for name, per_layer in (("uniform", None), ("owl", owl), ("solver", solver)):
            if per_layer is None:
                masks = prunelab.prune(model, strategy, sparsity=0.5, calibration=calibration)
            else:
                recipe = Recipe(strategy=strategy, layers=per_layer)
                masks = recipe.masks(model, calibration)
            row[name] = perplexity(model, test, masks)
            row[f"{name} sparsity"] = masks.sparsity()
        two_four = prunelab.get_strategy(strategy, granularity="2:4")
        row["2:4"] = perplexity(
            model, test, prunelab.prune(model, two_four, sparsity=0.5, calibration=calibration)
        )
        if label == "sparsegpt":  # a saved recipe re-applies to the same perplexity
            recipe = Recipe(strategy=strategy, layers=solver)
            again = Recipe.loads(recipe.dumps()).masks(model, calibration)
            row["solver again"] = perplexity(model, test, again)
        rows[label] = row
        print(f"# {label}: {row}", flush=True)
    print(f"\nDense perplexity {dense:.2f} ({len(test)} test sequences of 128 tokens).\n")
    print("| method | 50% uniform | 50% OWL | 50% solver (table) | 2:4 (uniform) |")
    print("|---|---|---|---|---|")
    for label, row in rows.items():
        print(
            f"| {label} | {row['uniform']:.2f} | {row['owl']:.2f} | "
            f"{row['solver']:.2f} ({row['table']}) | {row['2:4']:.2f} |"
        )
    if "solver again" in rows.get("sparsegpt", {}):
        row = rows["sparsegpt"]
        print(
            f"\nSparseGPT solver recipe re-applied from YAML: {row['solver again']:.4f} "
            f"(first {row['solver']:.4f})"
        )
    print(f"# total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
