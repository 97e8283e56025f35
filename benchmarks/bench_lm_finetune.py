"""How much perplexity fine-tuning wins back on the sample language model after one-shot
pruning, against the dense model and SparseGPT one-shot.

Run: ``uv run python benchmarks/bench_lm_finetune.py [--steps 32] [--test 128]``

Model ``sample:pydoc-gpt`` (4-layer GPT-2, its 16 block layers pruned; embeddings and the tied
head are not targets). Data ``sample:pydoc-text``, 128-token sequences. Each row prunes with
``layer-magnitude`` (unstructured, every layer at the same sparsity) and fine-tunes with
``prunelab.training.finetune`` for ``--steps`` optimizer steps (batches of 16 sequences from
the train split, Adam at 0.001, masks kept); SparseGPT (calibrated on 32 train sequences) is
measured one-shot and fine-tuned alike, from its reconstructed weights. Every perplexity is
on the first ``--test`` sequences of the *test* split; the ratios are against the dense
model's perplexity measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prunelab
from benchmarks.bench_lm_methods import perplexity
from prunelab.io import data as datasets
from prunelab.training import TrainConfig, finetune

SPARSITIES = (0.5, 0.7)
BATCH = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="fine-tuning steps per row")
    parser.add_argument("--test", type=int, default=128, help="test sequences")
    parser.add_argument("--no-sparsegpt", action="store_true", help="leave SparseGPT out")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(0)
    bundle = prunelab.zoo.load("sample:pydoc-gpt")
    model = bundle.model.eval()
    tokenizer = bundle.tokenizer
    train = datasets.load("sample:pydoc-text", split="train", tokenizer=tokenizer)
    train = train.head(args.steps * BATCH)  # one epoch of --steps steps (fewer if it runs out)
    test = datasets.load(f"sample:pydoc-text?limit={args.test}", split="test", tokenizer=tokenizer)
    config = TrainConfig(epochs=1, lr=0.001, batch_size=BATCH, seed=0)
    steps = -(-len(train) // BATCH)
    dense = perplexity(model, test)
    methods = ["layer-magnitude"] + ([] if args.no_sparsegpt else ["sparsegpt"])
    calibration = None
    if "sparsegpt" in methods:
        calibration = prunelab.Calibration(model, train.head(32), batches=2, batch_size=BATCH)
    print(f"# sample:pydoc-gpt, test perplexity on {len(test)} sequences; dense {dense:.2f}")
    print(f"# fine-tuning: {steps} steps of {BATCH} sequences, Adam lr 0.001, masks kept\n")
    print(
        "| method | sparsity | dense | one-shot | fine-tuned | one-shot / dense "
        "| fine-tuned / dense | train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for sparsity in SPARSITIES:
        for method in methods:
            masks = prunelab.prune(model, method, sparsity=sparsity, calibration=calibration)
            one_shot = perplexity(model, test, masks)
            began = time.perf_counter()
            tuned, _ = finetune(model, masks, train, config=config)
            seconds = time.perf_counter() - began
            after = perplexity(tuned, test)
            print(
                f"| {method} | {sparsity:.0%} | {dense:.2f} | {one_shot:.2f} | {after:.2f} "
                f"| {one_shot / dense:.2f}x | {after / dense:.2f}x | {seconds:.1f} |",
                flush=True,
            )
    print(f"\n# {time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
