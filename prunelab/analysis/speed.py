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

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..core.apply import apply, bake, copy_model, masked_weights
from ..core.masks import Masks, check_masks
from ..runtime.functional import run_device
from ..runtime.memory import model_bytes
from ..shrinking import shrink_with_plan
from .flops import model_stats

__all__ = [
    "COLUMNS",
    "MIN_EFFECT",
    "NO_DIFFERENCE",
    "Comparison",
    "Spread",
    "compare_latency",
    "latency",
    "semi_structured_support",
    "speed_report",
    "timed_rounds",
]

COLUMNS = [
    "variant",
    "batch",
    "median_ms",
    "q1_ms",
    "q3_ms",
    "ratio_vs_dense",
    "verdict",
    "params",
    "flops",
    "bytes",
    "why",
]
NO_DIFFERENCE = "no measurable difference"
MIN_EFFECT = 0.05
"""The smallest change in median time, as a fraction of the baseline's, that a verdict calls
real. Below it, clock drift, cache state and allocation order on a shared machine move the
same kernels by as much: a masked model measured 0.99x its dense twin, steadily, in a CI run."""


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and extremes of some timings, in milliseconds."""

    median: float
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (at least one).

        >>> Spread.of([1.0, 2.0, 3.0, 4.0, 100.0]).median
        3.0
        """
        if not len(values):
            raise ValueError("a spread needs at least one value")
        q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(min(values)), float(max(values)))

    def __str__(self) -> str:
        return f"{self.median:.3f} ms (middle half {self.q1:.3f}-{self.q3:.3f})"


@dataclass(frozen=True)
class Comparison:
    """Timings of a model against a baseline, measured in interleaved rounds.

    Attributes:
        base: Spread of the baseline's times.
        other: Spread of the other model's times.
        difference: Spread of the per-round differences (other minus base, milliseconds):
            pairing runs timed side by side cancels the drift both of them saw.
        names: What the baseline and the other model are called in :attr:`verdict`.
    """

    base: Spread
    other: Spread
    difference: Spread
    names: tuple[str, str] = ("dense", "masked")

    @property
    def real(self) -> bool:
        """Whether the difference lies outside the spread: the middle half of the paired
        differences is all on one side of zero, and the median difference is larger than the
        spread of the baseline's own times (the middle half of them). The first alone calls a
        steady 2% real on a quiet machine, though the run-to-run spread of either model is
        larger than that. And the median difference must be at least :data:`MIN_EFFECT` of the
        baseline's median: a steady 1% between identical kernels is the machine, not the model."""
        outside = abs(self.difference.median) > self.base.q3 - self.base.q1
        return self.steady and self.large and outside

    @property
    def steady(self) -> bool:
        """Whether the middle half of the paired differences lies on one side of zero."""
        return self.difference.q1 > 0 or self.difference.q3 < 0

    @property
    def large(self) -> bool:
        """Whether the median difference is at least :data:`MIN_EFFECT` of the baseline's."""
        return abs(self.difference.median) >= MIN_EFFECT * self.base.median

    @property
    def ratio(self) -> float:
        """Median time of the other model over the baseline's."""
        return self.other.median / self.base.median if self.base.median > 0 else float("nan")

    @property
    def verdict(self) -> str:
        """In plain words: a real difference, or :data:`NO_DIFFERENCE`."""
        base, other = self.names
        if not self.real:
            return NO_DIFFERENCE
        way = "faster" if self.ratio < 1 else "slower"
        return f"{other} {self.ratio:.2f}x the {base} time ({way})"

    def explain(self) -> str:
        """The verdict with the numbers behind it, in one sentence."""
        base, other = self.names
        d = self.difference
        spread = (
            f"the paired differences' middle half runs from {d.q1:+.3f} to {d.q3:+.3f} ms "
            f"(median {d.median:+.3f} ms), and the middle half of the {base} times spans "
            f"{self.base.q3 - self.base.q1:.3f} ms"
        )
        numbers = f"{other} {self.other.median:.3f} ms against {base} {self.base.median:.3f} ms"
        if not self.real:
            why = "the difference is within the spread"
            if self.steady and not self.large:
                why = f"the difference is steady but under {MIN_EFFECT:.0%} of the {base} time"
            return f"{NO_DIFFERENCE.capitalize()}: {numbers}; {spread}: {why}."
        return f"{self.verdict}: {numbers}; {spread}: the difference is outside the spread."


def timed_rounds(
    nets: Mapping[str, tuple[nn.Module, torch.Tensor]],
    *,
    repeats: int,
    warmup: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """Milliseconds per forward pass of each ``{name: (model, input)}``, interleaved.

    After ``warmup`` untimed passes each, every round times each model once, in a rotating
    order: drift of the machine (other load, allocator, caches, clock) then hits all of them
    alike instead of whichever happens to be timed first, and round ``i`` of two models can
    be compared as a pair. The models are called as they are, so pass copies of anything
    that must not change (BatchNorm in training mode updates its statistics).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(nets)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for _ in range(warmup):
            for net, x in nets.values():
                net(x)
        for index in range(repeats):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                net, x = nets[name]
                sync()
                start = time.perf_counter()
                net(x)
                sync()
                samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def _compare(samples: Mapping[str, list[float]], base: str, other: str) -> Comparison:
    pairs = zip(samples[other], samples[base], strict=True)
    return Comparison(
        base=Spread.of(samples[base]),
        other=Spread.of(samples[other]),
        difference=Spread.of([b - a for b, a in pairs]),
        names=(base, other),
    )


def compare_latency(
    model: nn.Module,
    masks: Masks,
    *,
    example_input: torch.Tensor,
    repeats: int = 41,
    warmup: int = 5,
    device: torch.device | str | None = None,
) -> Comparison:
    """Forward time of the dense model against the masked one (zeros written in), honestly.

    Both run as plain copies with dense kernels, warmed up and timed in interleaved rounds
    (see :func:`timed_rounds`). A difference is called real only when it is steady (the
    middle half of the paired differences lies on one side of zero) and larger than the
    spread of the dense times and at least :data:`MIN_EFFECT` of the dense median (see
    :attr:`Comparison.real`); otherwise the verdict is
    :data:`NO_DIFFERENCE`, which is what dense kernels on zeros should give.

    Args:
        model: The dense model; not modified.
        masks: The masks.
        example_input: The input batch to time.
        repeats: Timed rounds (each times both models once).
        warmup: Untimed passes of each model first.
        device: Where to run (default: where the model is).

    >>> from torch import nn
    >>> import prunelab
    >>> net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    >>> masks = prunelab.prune(net, "global-magnitude", sparsity=0.5)
    >>> result = compare_latency(net, masks, example_input=torch.randn(8, 16), repeats=5)
    >>> result.names, result.base.median > 0
    (('dense', 'masked'), True)
    """
    masks = check_masks(masks)
    run_on = run_device(model, device)
    x = example_input.to(run_on)
    nets = {
        "dense": (copy_model(model).to(run_on), x),
        "masked": (bake(apply(model, masks)).to(run_on), x),
    }
    samples = timed_rounds(nets, repeats=repeats, warmup=warmup, device=run_on)
    return _compare(samples, "dense", "masked")


def latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    masks: Masks | None = None,
    repeats: int = 20,
    warmup: int = 3,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Wall-clock time of one forward pass: median and 90th percentile over ``repeats``.

    The pass runs on a plain copy of the model with the masked weights written in (made once,
    before timing), so the time is that of the model with zeros in it (dense kernels: zeros
    alone do not make a model faster); :func:`timed_rounds` warms it up and times it.

    Returns:
        ``median_s``, ``p90_s``, ``min_s`` (seconds) and ``repeats``.

    >>> from torch import nn
    >>> timing = latency(nn.Linear(4, 2), torch.zeros(1, 4), repeats=3, warmup=1)
    >>> timing["min_s"] <= timing["median_s"] <= timing["p90_s"]
    True
    """
    run_on = run_device(model, device)
    net = copy_model(model) if masks is None else bake(apply(model, masks))
    nets = {"model": (net.to(run_on), example_input.to(run_on))}
    times = timed_rounds(nets, repeats=repeats, warmup=warmup, device=run_on)["model"]
    times = sorted(ms / 1000 for ms in times)
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    return {
        "median_s": statistics.median(times),
        "p90_s": p90,
        "min_s": times[0],
        "repeats": repeats,
    }


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
    repeats: int = 21,
    warmup: int = 3,
) -> pd.DataFrame:
    """Measured latency of each way of running the pruned model, with the reason.

    Variants: ``dense`` (the model as given); ``masked`` (zeros written in, dense kernels);
    ``shrunk`` (channels removed by :func:`prunelab.shrinking.shrink`; only for channel masks);
    on a CUDA GPU with sparse tensor cores, ``dense fp16`` and ``2:4 fp16`` (Linear layers
    with 2:4 masks in ``torch.sparse`` semi-structured form). Every variant runs as a plain
    copy, warmed up, then timed in ``repeats`` interleaved rounds (:func:`timed_rounds`);
    a variant's difference from dense is called real only outside the spread of the paired
    differences (:class:`Comparison`), else its verdict is :data:`NO_DIFFERENCE`.

    Args:
        model: The dense model; not modified.
        masks: The masks.
        example_input: One input; its first sample is repeated to each batch size.
        batch_sizes: Batch sizes to time.
        device: Where to run (default: where the model is).
        repeats: Timed rounds per batch size (each times every variant once).
        warmup: Untimed passes of each variant first, per batch size.

    Returns:
        A DataFrame with variant, batch, median_ms, q1_ms and q3_ms (the middle half of its
        times), ratio_vs_dense (median time / dense median at the same batch and precision),
        verdict (a real difference from dense, or "no measurable difference"), params
        (nonzero for masked), flops (per forward pass), bytes (stored densely) and why
        (plain words). ``attrs["explanation"]`` holds one paragraph covering the variants,
        including those that could not be measured.
    """
    masks = check_masks(masks)
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    run_on = run_device(model, device)
    one = _batch(example_input, 1)
    dense_stats = model_stats(model, masks, example_input=one)
    notes: list[str] = []
    variants: list[tuple[str, nn.Module, dict, str]] = []

    def add(name, net, *, params, flops, size, why) -> None:
        # every variant runs as a plain copy on the device: no parameter swapping in the
        # timed call, and nothing the timing does can touch the given model
        variants.append((name, net.to(run_on), dict(params=params, flops=flops, bytes=size), why))

    sparsity = masks.sparsity()
    dense_flops, dense_bytes = dense_stats["flops"], dense_stats["dense_bytes"]
    add(
        "dense",
        copy_model(model),
        params=dense_stats["parameters"],
        flops=dense_flops,
        size=dense_bytes,
        why="the baseline: every weight is stored and multiplied",
    )
    add(
        "masked",
        bake(apply(model, masks)),
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
        small, plan = shrink_with_plan(model, masks, example_input=one)
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
        x = _batch(example_input, size).to(run_on)
        nets = {
            name: (net, x.half() if name.endswith("fp16") and x.is_floating_point() else x)
            for name, net, _, _ in variants
        }
        samples = timed_rounds(nets, repeats=repeats, warmup=warmup, device=run_on)
        for name, _, stats, why in variants:
            base = "dense fp16" if name.endswith("fp16") else "dense"
            spread = Spread.of(samples[name])
            verdict = "the baseline"
            text = why
            if name != base:
                comparison = _compare(samples, base, name)
                verdict = comparison.verdict
                if name == "shrunk" and not (comparison.real and comparison.ratio < 1):
                    text += (
                        f"; at batch {size} the time is dominated by fixed per-layer costs "
                        "(kernel launches, memory traffic, Python), not arithmetic, so fewer "
                        "FLOPs save nothing measurable here"
                    )
            base_median = Spread.of(samples[base]).median
            rows.append(
                {
                    "variant": name,
                    "batch": size,
                    "median_ms": spread.median,
                    "q1_ms": spread.q1,
                    "q3_ms": spread.q3,
                    "ratio_vs_dense": spread.median / base_median if base_median > 0 else np.nan,
                    "verdict": verdict,
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
        measured = ", ".join(
            f"batch {b}: {v}" for b, v in zip(rows["batch"], rows["verdict"], strict=True)
        )
        parts.append(f"{name} ({measured}): {rows['why'].iloc[-1]}.")
    return " ".join(parts + notes)
