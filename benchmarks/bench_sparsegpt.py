"""SparseGPT against Wanda on the same layers of a small GPT-2: time per layer, and peak memory.

Run: ``uv run python benchmarks/bench_sparsegpt.py [--repeats 3] [--device cpu] [--threads 1]``

One torch intra-op thread by default, as the app runs: on a shared machine OpenMP workers spin
waiting for cores other processes hold, and SparseGPT's column loop of small operations then
took 7-13x longer with 2 threads than with 1 (0.14 s against 1-2 s for a 768x256 layer).

Model: ``sample:pydoc-gpt`` when this checkout ships it, else a GPT-2 built here
(``GPT2Config``: 4 layers, n_embd 256, 4 heads, vocabulary 1,024, random weights). GPT-2's
``Conv1D`` layers are swapped for equal ``nn.Linear`` ones (weight transposed; the outputs are
checked equal), so that the benchmark runs the same code before and after prunelab learns the
Conv1D layout. The layers pruned are the 4 linear layers of every block (the embeddings and
the tied output layer are left alone, as in both papers). Calibration: 16 random token
sequences of 128 tokens (2,048 tokens, 4 batches).

Measured in the same run, median of ``--repeats``:

* whole run per layer: ``Pruner(model, strategy, calibration=Calibration(...)).masks(0.5)``,
  with a fresh Calibration each time, so Wanda pays its one calibration pass and SparseGPT its
  passes through the already-pruned layers; divided by the number of layers;
* solver per layer: SparseGPT's ``solve_layer`` on one layer's Hessian against Wanda's
  per-row selection on that layer's input norms (scores, sort, masks), summed over layers;
* peak memory of a whole-model SparseGPT run (and of Wanda's) as the rise of the process's
  resident set size (``/proc/self/statm``, sampled every millisecond by a thread; tracemalloc
  does not see torch's allocations), each in a fresh process after one warm-up calibration
  pass, median of 3 processes, against the model's own parameter bytes. With
  ``--device cuda``: ``torch.cuda.max_memory_allocated`` rise instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prunelab
from prunelab.core.obs import HessianSum, solve_layer, solver_dtype
from prunelab.core.rows import RowRanked

PAGE = os.sysconf("SC_PAGE_SIZE")


def gpt2(device: str) -> tuple[nn.Module, str]:
    try:
        model = prunelab.zoo.load("sample:pydoc-gpt").model
        name = "sample:pydoc-gpt"
    except Exception:  # not shipped in this checkout: build the tiny GPT-2
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=1024,
            n_positions=128,
            n_embd=256,
            n_layer=4,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(config)
        name = "GPT-2 (4 layers, n_embd 256, random weights)"
    return as_linear(model).eval().to(device), name


class Logits(nn.Module):
    """The LM's logits as a plain tensor output (prunelab's calibration takes the first)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, use_cache=False).logits


def as_linear(model: nn.Module) -> nn.Module:
    """``model`` with every Hugging Face Conv1D replaced by the equal nn.Linear."""
    from transformers.pytorch_utils import Conv1D

    model.eval()  # no dropout: the comparison below and the runs are deterministic
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            parent, _, child = name.rpartition(".")
            linear = nn.Linear(module.weight.shape[0], module.weight.shape[1])
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                linear.bias.copy_(module.bias)
            setattr(model.get_submodule(parent), child, linear)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before)
    return Logits(model)


def block_layers(model: nn.Module) -> list[str]:
    return [t.fqn for t in prunelab.targets(model) if ".h." in t.fqn or ".layers." in t.fqn]


def median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def whole_run(model, strategy, layers, data, device):
    calibration = prunelab.Calibration(model, data, batches=4, batch_size=4, device=device)
    pruner = prunelab.Pruner(model, strategy, targets=layers, calibration=calibration)
    return pruner.masks(sparsity=0.5)


def layer_inputs(model, layers, data, device):
    """Per layer: its dense inputs' Hessian and input norms (for the solver-only comparison)."""
    sums, norms = {}, {}
    hooks = []
    for fqn in layers:
        module = model.get_submodule(fqn.rpartition(".")[0])
        sums[fqn] = HessianSum(module.in_features, device=torch.device(device))

        def hook(mod, args, out, fqn=fqn):
            sums[fqn].add(args[0])

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for start in range(0, len(data), 4):
                model(data[start : start + 4].to(device))
    finally:
        for handle in hooks:
            handle.remove()
    for fqn, acc in sums.items():
        norms[fqn] = (acc.total.diagonal().clamp_min(0) ** 0.5).float()
    return sums, norms


def solver_only(model, layers, sums, norms, device, repeats):
    targets = {t.fqn: t for t in prunelab.targets(model)}
    weights = {f: model.get_parameter(f).detach() for f in layers}
    dtype = solver_dtype(torch.device(device))

    def sparsegpt():
        for fqn in layers:
            solve_layer(weights[fqn].to(dtype), sums[fqn].hessian(), sparsity=0.5)

    def wanda():
        for fqn in layers:
            scores = weights[fqn].abs() * norms[fqn]
            RowRanked({fqn: scores.cpu()}, {fqn: targets[fqn]}).masks(
                sparsity=0.5, threshold=None, per_layer={}
            )

    return median(sparsegpt, repeats), median(wanda, repeats)


class PeakRSS:
    """Highest resident set size while the ``with`` block runs, sampled every millisecond."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.rise = self.peak - self.start


def peak_rise(fn, device) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with PeakRSS() as watch:
        fn()
    return watch.rise


def peak_in_child(method: str, args: argparse.Namespace) -> int:
    command = [sys.executable, __file__, "--peak-of", method, "--device", args.device]
    command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: see the docstring)"
    )
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, name = gpt2(args.device)
    vocab = model.lm.config.vocab_size
    data = torch.randint(0, vocab, (16, 128), generator=torch.Generator().manual_seed(0))
    layers = block_layers(model)
    if args.peak_of:
        # warmed up with the same forward passes both methods make, then measured once
        prunelab.Calibration(model, data, batches=4, batch_size=4).input_norms()
        # and with linear algebra's code loaded: its pages are not the run's memory
        solve_layer(
            torch.randn(8, 8, dtype=torch.float64), torch.eye(8, dtype=torch.float64), sparsity=0.5
        )
        print(
            peak_rise(
                lambda: whole_run(model, args.peak_of, layers, data, args.device), args.device
            )
        )
        return
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"model: {name}; {len(layers)} layers pruned; {size / 2**20:.1f} MiB of parameters")
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")

    # each peak in a fresh process (a heap grown by earlier work hides a later rise); single
    # readings spread by up to 2x with the allocator: the median of three, and the range
    peaks = {m: sorted(peak_in_child(m, args) for _ in range(3)) for m in ("sparsegpt", "wanda")}
    whole_run(model, "wanda", layers, data, args.device)  # warm-up (allocator, kernels)
    t_sparse = median(
        lambda: whole_run(model, "sparsegpt", layers, data, args.device), args.repeats
    )
    t_wanda = median(lambda: whole_run(model, "wanda", layers, data, args.device), args.repeats)
    n = len(layers)
    print(
        f"whole run per layer:  sparsegpt {t_sparse / n * 1e3:8.1f} ms, wanda "
        f"{t_wanda / n * 1e3:8.1f} ms  -> sparsegpt takes {t_sparse / t_wanda:.1f}x wanda's time"
    )
    sums, norms = layer_inputs(model, layers, data, args.device)
    s_sparse, s_wanda = solver_only(model, layers, sums, norms, args.device, args.repeats)
    print(
        f"solver per layer:     sparsegpt {s_sparse / n * 1e3:8.1f} ms, wanda "
        f"{s_wanda / n * 1e3:8.1f} ms  -> sparsegpt takes {s_sparse / s_wanda:.1f}x wanda's time"
    )
    how = "CUDA max allocated" if args.device.startswith("cuda") else "peak RSS"
    mib = 2**20
    print(f"peak memory of a whole-model run ({how} rise, median of 3 processes [range]):")
    for method, (low, mid, high) in peaks.items():
        print(
            f"  {method:<10} {mid / mib:6.1f} MiB [{low / mib:.1f}-{high / mib:.1f}] = "
            f"{mid / size:.2f}x the model's parameters [{low / size:.2f}-{high / size:.2f}]"
        )


if __name__ == "__main__":
    main()
