"""Which torchvision classification architectures prunelab shrinks, against Torch-Pruning used
directly, and how long each takes.

Run: ``uv run python benchmarks/bench_coverage.py [--archs resnet18,googlenet] [--timeout 300]
[--max-gib 2] [--threads 1] [--repeat 3]``

Each architecture (random weights, batch 1, 224x224; 299 for Inception v3; GoogLeNet and
Inception with their auxiliary heads) runs in its own process with a time limit:

* prunelab: ``prunelab.prune(model, "weight-norm-channel", sparsity=0.5)`` then
  ``prunelab.shrink`` with its output check (relative, on two inputs, never vacuous);
* Torch-Pruning directly: ``MagnitudePruner`` with L2 magnitude importance, pruning ratio 0.5,
  the classifier ignored, ``step()`` on a copy (Torch-Pruning checks nothing).

Both times include choosing the channels and the copy. Each library runs ``--repeat`` times,
alternating (prunelab, Torch-Pruning, prunelab, ...), and its fastest run counts: the first
call on a model's shapes pays one-off costs (kernel choice, allocator growth) that whichever
library runs first would otherwise carry alone; on small models these are most of a run
(mobilenet_v3_small: Torch-Pruning 0.94 s on its first run, 0.26 s on its second). Repeats stop
once a single run took over 20 s, so large models cost one run each. For each it prints whether it
succeeded (or why not), parameters kept, and whether the result runs in eval mode (batch 1)
and train mode (batch 2: batch statistics need two samples); then coverage and the ratio of
times (prunelab / Torch-Pruning; goal at most 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch


def _build(name: str):
    import torchvision

    kwargs = (
        {"aux_logits": True, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    )
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    side = 299 if name == "inception_v3" else 224
    return model, torch.rand(1, 3, side, side)


def _runs(model, x) -> str:
    """Which modes the model runs in: eval at batch 1, train at batch 2 (buffers restored)."""
    modes = []
    with torch.no_grad():
        try:
            model.eval()(x)
            modes.append("eval")
        except Exception:
            pass
        buffers = [(b, b.clone()) for b in model.buffers()]
        try:
            model.train()(torch.cat([x, x]))
            modes.append("train")
        except Exception:
            pass
        for buffer, value in buffers:  # load_state_dict would need each module's metadata
            buffer.copy_(value)
    return "+".join(modes) or "none"


def _prunelab(model, x) -> dict:
    import prunelab

    start = time.perf_counter()
    masks = prunelab.prune(model, "weight-norm-channel", sparsity=0.5)
    small = prunelab.shrink(model, masks, example_input=x)
    seconds = time.perf_counter() - start
    kept = sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "kept": kept, "runs": _runs(small, x)}


def _torch_pruning(model, x) -> dict:
    import torch_pruning as tp

    from prunelab.core.apply import copy_model

    start = time.perf_counter()
    work = copy_model(model)
    heads = [m for m in work.modules() if isinstance(m, torch.nn.Linear)]
    ignored = [m for m in heads if m.out_features == 1000]  # the classifiers keep their classes
    pruner = tp.pruner.MagnitudePruner(
        work,
        x,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=ignored,
    )
    pruner.step()
    seconds = time.perf_counter() - start
    kept = sum(p.numel() for p in work.parameters()) / sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "kept": kept, "runs": _runs(work, x)}


def _warm_up() -> None:
    """Both paths once on a tiny model, so neither time includes imports and first calls."""
    tiny = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 1000),
    ).eval()
    x = torch.rand(1, 3, 8, 8)
    _prunelab(tiny, x)
    _torch_pruning(tiny, x)


REPEAT_UNDER = 20.0  # seconds: a slower run is not repeated


def _one(name: str, max_gib: float, threads: int, repeat: int) -> dict:
    torch.set_num_threads(threads)
    _warm_up()
    torch.manual_seed(0)
    model, x = _build(name)
    gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    if gib > max_gib:
        return {"arch": name, "skipped": f"{gib:.1f} GiB of parameters"}
    row: dict = {"arch": name}
    for _ in range(repeat):
        for key, fn in (("prunelab", _prunelab), ("tp", _torch_pruning)):
            if "error" in row.get(key, {}):
                continue
            try:
                result = fn(model, x)
            except Exception as exc:  # the reason is the result
                row[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"}
                continue
            best = row.get(key)
            result["runs_timed"] = 1 + (best["runs_timed"] if best else 0)
            if best is not None and best["seconds"] < result["seconds"]:
                result["seconds"] = best["seconds"]
            row[key] = result
        if any(r.get("seconds", 0) > REPEAT_UNDER for r in row.values() if isinstance(r, dict)):
            break
    return row


def _classification() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _cell(result: dict | None) -> str:
    if result is None:
        return "timed out"
    if "error" in result:
        return "FAIL " + result["error"]
    return (
        f"ok {result['kept']:.2f} {result['seconds']:.2f}s "
        f"(best of {result['runs_timed']}) {result['runs']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="", help="comma-separated (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per architecture")
    parser.add_argument("--max-gib", type=float, default=2.0, help="skip larger models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per library (fastest counts)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.max_gib, args.threads, args.repeat)))
        return
    archs = [a for a in args.archs.split(",") if a] or _classification()
    print("| architecture | prunelab (kept, time, modes) | Torch-Pruning | time ratio |")
    print("|---|---|---|---|")
    ours = theirs = tried = 0
    ratios = []
    for name in archs:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--one",
            name,
            "--max-gib",
            str(args.max_gib),
            "--threads",
            str(args.threads),
            "--repeat",
            str(args.repeat),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            lines = done.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if lines else {"arch": name, "crashed": done.stderr[-200:]}
        except subprocess.TimeoutExpired:
            row = {"arch": name, "prunelab": None, "tp": None}
        if "skipped" in row or "crashed" in row:
            print(f"| {name} | {row.get('skipped') or 'crashed: ' + row['crashed']} | | |")
            continue
        tried += 1
        mine, other = row.get("prunelab"), row.get("tp")
        ok_mine = mine is not None and "error" not in mine and mine["runs"] == "eval+train"
        ok_other = other is not None and "error" not in other and other["runs"] == "eval+train"
        ours, theirs = ours + ok_mine, theirs + ok_other
        ratio = ""  # timed whenever both finished: a result that fails a mode still cost its time
        if all(r is not None and "error" not in r for r in (mine, other)):
            ratios.append(mine["seconds"] / other["seconds"])
            ratio = f"{ratios[-1]:.2f}"
        print(f"| {name} | {_cell(mine)} | {_cell(other)} | {ratio} |", flush=True)
    print(
        f"\ncoverage (shrunk, runs in eval and train): prunelab {ours}/{tried}, "
        f"Torch-Pruning {theirs}/{tried}"
    )
    if ratios:
        print(
            f"time prunelab / Torch-Pruning: median {sorted(ratios)[len(ratios) // 2]:.2f}, "
            f"max {max(ratios):.2f} (goal <= 2)"
        )


if __name__ == "__main__":
    main()
