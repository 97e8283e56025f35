"""Honest speed: measured latency of the dense, masked, shrunk and 2:4 sparse models.

"Why is my pruned model not faster?" Because zeros in a dense tensor are multiplied like
any other number. :func:`speed_report` measures, on this machine, each way of running the
pruned model and says in plain words why each one is or is not faster.

>>> import torch
>>> from torch import nn
>>> import prunelab
>>> net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
>>> masks = prunelab.prune(net, "weight-norm-channel", sparsity=0.5)
>>> report = speed_report(net, masks, example_input=torch.randn(1, 32), repeats=2)
>>> report["variant"].unique().tolist()
['dense', 'masked', 'shrunk']
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .apply import copy_model, masked_weights
from .evaluate import latency, model_stats
from .masks import Masks, check_masks
from .memory import model_bytes
from .shrink import _shrink

__all__ = ["COLUMNS", "semi_structured_support", "speed_report"]

COLUMNS = ["variant", "batch", "median_ms", "ratio_vs_dense", "params", "flops", "bytes", "why"]


def semi_structured_support(device: torch.device | str | None) -> str | None:
    """None when 2:4 semi-structured sparse kernels can run on ``device``, else the reason."""
    device = torch.device(device or "cpu")
    if device.type != "cuda":
        return (
            "2:4 semi-structured sparsity needs an NVIDIA GPU with sparse tensor cores "
            f"(Ampere or newer); this run is on {device.type.upper()}, so it is not measured"
        )
    if not torch.cuda.is_available():
        return "2:4 semi-structured sparsity needs CUDA, which is not available here"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return (
            f"2:4 semi-structured sparsity needs compute capability 8.0 or newer; this GPU "
            f"has {major}.x"
        )
    return None


def _batch(example_input: torch.Tensor, size: int) -> torch.Tensor:
    one = example_input[:1]
    return one.expand(size, *one.shape[1:]).contiguous()


def _two_four(model: nn.Module, masks: Masks, device: torch.device):
    """A half-precision copy with 2:4-masked Linear weights in semi-structured form, and a
    dense half-precision copy to compare with; or the reason why not."""
    from torch.sparse import to_sparse_semi_structured

    dense = copy_model(model).half().to(device).eval()
    sparse = copy_model(model).half().to(device).eval()
    converted = 0
    with torch.no_grad():
        for fqn, value in masked_weights(model, masks).items():
            module_fqn, _, name = fqn.rpartition(".")
            module = sparse.get_submodule(module_fqn) if module_fqn else sparse
            half = value.half().to(device)
            rows = None
            if isinstance(module, nn.Linear) and name == "weight" and masks[fqn].shape[1] % 4 == 0:
                rows = masks[fqn].reshape(-1, 4)
            if rows is not None and not bool((rows.sum(dim=1) > 2).any()):
                try:
                    module.weight = nn.Parameter(
                        to_sparse_semi_structured(half), requires_grad=False
                    )
                    converted += 1
                    continue
                except (RuntimeError, ValueError):
                    pass
            getattr(module, name).copy_(half)
    if not converted:
        return (
            None,
            None,
            (
                "no Linear layer has a 2:4 mask (at most 2 kept weights in every 4 along a row) "
                "with a shape the semi-structured kernels accept, so there is nothing to run with "
                "them; prune with the n:m strategy at 2:4"
            ),
        )
    return dense, sparse, None


def speed_report(
    model: nn.Module,
    masks: Masks,
    *,
    example_input: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 16),
    device: torch.device | str | None = None,
    repeats: int = 10,
) -> pd.DataFrame:
    """Measured latency of each way of running the pruned model, with the reason.

    Variants: ``dense`` (the model as given); ``masked`` (zeros written in, dense kernels);
    ``shrunk`` (channels removed by :func:`prunelab.shrink.shrink`; only for channel masks);
    on a CUDA GPU with sparse tensor cores, ``dense fp16`` and ``2:4 fp16`` (Linear layers
    with 2:4 masks in ``torch.sparse`` semi-structured form). Times are the median of
    ``repeats`` runs after warm-up, from :func:`prunelab.latency`.

    Args:
        model: The dense model; not modified.
        masks: The masks.
        example_input: One input; its first sample is repeated to each batch size.
        batch_sizes: Batch sizes to time.
        device: Where to run (default: where the model is).
        repeats: Timed runs per variant and batch size.

    Returns:
        A DataFrame with variant, batch, median_ms, ratio_vs_dense (time / dense time at
        the same batch and precision), params (nonzero for masked), flops (per forward pass),
        bytes (stored densely) and why (plain words). ``attrs["explanation"]`` holds one
        paragraph covering the variants, including those that could not be measured.
    """
    masks = check_masks(masks)
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    run_on = (
        torch.device(device)
        if device is not None
        else next((p.device for p in model.parameters()), torch.device("cpu"))
    )
    one = _batch(example_input, 1)
    dense_stats = model_stats(model, masks, example_input=one)
    notes: list[str] = []
    variants: list[tuple[str, nn.Module, Masks | None, dict, str]] = []

    def add(name, net, *, params, flops, size, why, net_masks=None) -> None:
        variants.append((name, net, net_masks, dict(params=params, flops=flops, bytes=size), why))

    sparsity = masks.sparsity()
    dense_flops, dense_bytes = dense_stats["flops"], dense_stats["dense_bytes"]
    add(
        "dense",
        model,
        params=dense_stats["parameters"],
        flops=dense_flops,
        size=dense_bytes,
        why="the baseline: every weight is stored and multiplied",
    )
    add(
        "masked",
        model,
        net_masks=masks,
        params=dense_stats["nonzero_parameters"],
        flops=dense_flops,
        size=dense_bytes,
        why=(
            f"{sparsity:.0%} of the pruned layers' weights are zero, but they are still "
            "stored and multiplied: dense kernels do not skip zeros, so it runs about as "
            "fast as dense. Only sparse kernels could do the "
            f"{dense_stats['effective_flops']:,} effective FLOPs instead of all of them"
        ),
    )
    try:
        small, plan = _shrink(model, masks, one, check=True)
    except ValueError as exc:
        notes.append(f"No shrunk model: {exc}.")
    else:
        small_stats = model_stats(small, example_input=one)
        removed = sum(plan.removed.values())
        add(
            "shrunk",
            small,
            params=small_stats["parameters"],
            flops=small_stats["flops"],
            size=small_stats["dense_bytes"],
            why=(
                f"{removed:,} channels are physically removed, so "
                f"{small_stats['parameters'] / max(dense_stats['parameters'], 1):.0%} of "
                "the parameters and "
                f"{small_stats['flops'] / max(dense_flops, 1):.0%} of the FLOPs "
                "remain and every layer does less work with ordinary dense kernels"
            ),
        )
    reason = semi_structured_support(run_on)
    pair = (None, None, reason)
    if reason is None:
        pair = _two_four(model, masks, run_on)
    if pair[2] is not None:
        notes.append(f"No 2:4 row: {pair[2]}.")
    else:
        add(
            "dense fp16",
            pair[0],
            params=dense_stats["parameters"],
            flops=dense_flops,
            size=model_bytes(pair[0]),
            why="the half-precision baseline for the 2:4 row",
        )
        add(
            "2:4 fp16",
            pair[1],
            params=dense_stats["nonzero_parameters"],
            flops=dense_flops,
            size=model_bytes(pair[1]),
            why=(
                "2:4 Linear weights run on sparse tensor cores, which skip the zeros in "
                "hardware: up to 2x on those layers' matrix products; other layers are "
                "unchanged"
            ),
        )
    rows = []
    for size in sizes:
        x = _batch(example_input, size)
        samples: dict[str, list[float]] = {name: [] for name, *_ in variants}
        # one warm-up run each, then rounds that time every variant once, in a rotating
        # order: drift of the machine (other load, allocator, caches) hits all variants alike
        # instead of whichever happens to be timed first
        for index in range(repeats + 1):
            shift = index % len(variants)
            for name, net, net_masks, _, _ in variants[shift:] + variants[:shift]:
                inputs = x.half() if name.endswith("fp16") and x.is_floating_point() else x
                timing = latency(
                    net, inputs, masks=net_masks, repeats=1, warmup=int(index == 0), device=run_on
                )
                if index > 0:
                    samples[name].append(timing["median_s"] * 1000)
        timed = {name: statistics.median(values) for name, values in samples.items()}
        for name, _, _, stats, why in variants:
            ms = timed[name]
            base = timed["dense fp16" if name.endswith("fp16") else "dense"]
            ratio = ms / base if base > 0 else float("nan")
            text = why
            if name == "shrunk" and ratio >= 0.95:
                text += (
                    f"; at batch {size} the time is dominated by fixed per-layer costs "
                    "(kernel launches, memory traffic, Python), not arithmetic, so fewer "
                    "FLOPs save little here"
                )
            rows.append(
                {
                    "variant": name,
                    "batch": size,
                    "median_ms": ms,
                    "ratio_vs_dense": ratio,
                    "params": int(stats["params"]),
                    "flops": int(stats["flops"]) * size,
                    "bytes": int(stats["bytes"]),
                    "why": text,
                }
            )
    report = pd.DataFrame(rows, columns=COLUMNS)
    report.attrs["device"] = str(run_on)
    report.attrs["explanation"] = _explanation(report, notes)
    return report


def _explanation(report: pd.DataFrame, notes: list[str]) -> str:
    parts = []
    for name in report["variant"].unique():
        rows = report[report["variant"] == name]
        ratios = ", ".join(
            f"{r:.2f}x at batch {b}"
            for b, r in zip(rows["batch"], rows["ratio_vs_dense"], strict=True)
        )
        parts.append(f"{name} ({ratios} the dense time): {rows['why'].iloc[-1]}.")
    return " ".join(parts + notes)
