"""Prefix caching across transformer blocks: a pruned layer in block i reruns blocks i.. only.

Run: ``uv run python benchmarks/bench_prefix.py [--layers 6] [--width 128] [--sequences 32]``

Model: the sample language model (``sample_models/pydoc-gpt``) when it is built, else a
GPT-2 of ``--layers`` blocks and ``--width`` channels with random weights (a Hugging Face
``GPT2LMHeadModel``: ``torch.fx`` cannot trace it, so this is the only caching it gets).
Data: ``sample:pydoc-text`` (128-token sequences). For every block, one of its layers
(``mlp.c_fc``) is pruned to 50% and the model is evaluated on all sequences: the baseline
runs the whole model (``functional_forward``, what sensitivity did before), prunelab runs
:class:`prunelab.sweeps.prefix.BlockPlan`'s suffix from the hidden states recorded once (the
recording is timed too, as its own line and inside the total). Outputs are checked equal
(atol 1e-5) before anything is timed; only ratios measured in this run are claimed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._timing import median_time, report
from prunelab.io.data import load
from prunelab.runtime.functional import functional_forward
from prunelab.sweeps.prefix import BlockPlan, PrefixPlan

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models" / "pydoc-gpt"


def _model(layers: int, width: int):
    import transformers

    if (SAMPLE / "config.json").is_file():
        return "sample:pydoc-gpt", transformers.GPT2LMHeadModel.from_pretrained(SAMPLE).eval()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=4, vocab_size=1024, n_positions=128
    )
    return f"GPT-2 {layers}x{width} (random)", transformers.GPT2LMHeadModel(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    name, model = _model(args.layers, args.width)
    data = load(f"sample:pydoc-text?context=128&limit={args.sequences}")
    batches = list(data.inputs.split(args.batch))
    plan = PrefixPlan.for_model(model, batches[0])
    assert isinstance(plan, BlockPlan), "expected block caching for a Hugging Face model"
    blocks = len(model.transformer.h)
    cuts = list(range(1, blocks))
    fqns = {cut: f"transformer.h.{cut}.mlp.c_fc.weight" for cut in cuts}
    overrides = {}
    for cut, fqn in fqns.items():
        weight = model.get_parameter(fqn)
        overrides[cut] = {fqn: weight * (weight.abs() > weight.abs().median())}

    def record():
        return [plan.record(cuts, b) for b in batches]

    def full():
        return [[functional_forward(model, overrides[c], b).logits for b in batches] for c in cuts]

    def cached(recorded):
        return [[plan.suffix(c, r[c], overrides[c]).logits for r in recorded] for c in cuts]

    with torch.inference_mode():
        recorded = record()
        for ours, theirs in zip(cached(recorded), full(), strict=True):
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        t_record = median_time(record)
        t_full = median_time(full)
        t_cached = median_time(lambda: cached(recorded))
    print(
        f"{name}: {blocks} blocks, {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"{len(data)} sequences of 128 tokens; one layer per block 1..{blocks - 1} pruned; "
        f"torch threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d')}"
    )
    expected = blocks * len(cuts) / sum(blocks - c for c in cuts)
    print(f"blocks run: full {blocks * len(cuts)}, cached {sum(blocks - c for c in cuts)}")
    print(f"(ideal ratio, if the head and embeddings cost nothing: {expected:.2f}x)")
    report("record hidden states (once per run)", t_record, t_full, "all full passes")
    report("suffix passes from recorded states", t_cached, t_full, "full passes")
    report("record + suffix passes", t_record + t_cached, t_full, "full passes")


if __name__ == "__main__":
    main()
