"""Lesson 8: why zeros alone are not faster, and what is. Honest, measured numbers.

A masked model stores and multiplies its zeros like any other number: dense kernels (the
ordinary matrix routines) do the same work whatever the values. Three things do gain:

* removing whole channels, which leaves a smaller *dense* model (:func:`prunelab.shrink`);
* storing only the kept weights in a *sparse format* (bitmask, CSR, COO:
  :func:`prunelab.analysis.compression`), which saves bytes on disk, not time;
* 2:4 sparsity on GPUs whose sparse tensor cores skip the zeros in hardware
  (:func:`prunelab.analysis.speed.semi_structured_support` says whether this machine has them).

Times come from :func:`prunelab.analysis.speed_report`: interleaved rounds, and a difference
counts only when it lies outside the measured spread.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
>>> seen = measure(net, sparsity=0.5, example_input=torch.randn(1, 8), batch_sizes=(2,),
...                repeats=3)
>>> list(seen.sizes)[0], seen.report["variant"].tolist()
('dense', ['dense', 'masked', 'shrunk'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
import torch
from torch import nn

from .. import figures
from ..analysis import compression, speed_report
from ..analysis.speed import semi_structured_support
from ..core.pruner import prune

__all__ = [
    "BATCH_SIZES",
    "SAMPLE_MODEL",
    "STRATEGY",
    "SpeedLesson",
    "measure",
    "size_figure",
    "speed_figure",
    "two_four_note",
]

SAMPLE_MODEL = "sample:digits-mlp"
STRATEGY = "weight-norm-channel"  # whole output channels: masks that can shrink the model
# one input (fixed per-layer costs dominate) and a large batch (arithmetic dominates)
BATCH_SIZES = (1, 256)


@dataclass(frozen=True)
class SpeedLesson:
    """Bytes and measured times of one model pruned to one sparsity, in every form.

    Attributes:
        sparsity: Fraction of the pruned layers' weights that are zero.
        sizes: ``{form: bytes}``: dense, masked (zeros stored like any number), the sparse
            formats COO, CSR and bitmask, and shrunk (channels removed, still dense).
        report: :func:`prunelab.analysis.speed_report`'s table (variant, batch, median_ms,
            q1_ms, q3_ms, ratio_vs_dense, verdict, params, ...).
        device: Where the times were measured.
    """

    sparsity: float
    sizes: dict[str, int]
    report: pd.DataFrame = field(repr=False)
    device: str

    def parameters(self) -> dict[str, int]:
        """``{variant: parameters}``; the masked model's count is of its nonzero ones."""
        first = self.report.drop_duplicates("variant")
        return {str(v): int(n) for v, n in zip(first["variant"], first["params"], strict=True)}

    def verdicts(self) -> list[str]:
        """One line per variant and batch: its median time and whether it really differs."""
        rows = self.report[self.report["variant"] != "dense"]
        return [
            f"{row.variant}, batch {row.batch}: {row.median_ms:.3f} ms, {row.verdict}"
            for row in rows.itertuples()
        ]


def measure(
    model: nn.Module,
    *,
    sparsity: float,
    example_input: torch.Tensor,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int = 15,
) -> SpeedLesson:
    """Remove ``sparsity`` of each layer's output channels (by weight norm), then count the
    bytes of each form and time dense, masked and shrunk.

    Args:
        model: The dense model; not modified.
        sparsity: Fraction of the output channels removed in each layer (not the output
            layer's: its channels are the classes).
        example_input: One input of the model.
        batch_sizes: Batch sizes to time.
        repeats: Timed rounds per batch size.
    """
    masks = prune(model, STRATEGY, sparsity=sparsity)
    report = speed_report(
        model, masks, example_input=example_input, batch_sizes=batch_sizes, repeats=repeats
    )
    stored = compression(model, masks)
    sizes = {
        "dense": int(stored["dense_bytes"]),
        "masked": int(stored["dense_bytes"]),  # zeros are stored like any other number
        "COO": int(stored["coo_bytes"]),
        "CSR": int(stored["csr_bytes"]),
        "bitmask": int(stored["bitmask_bytes"]),
    }
    shrunk = report[report["variant"] == "shrunk"]
    if len(shrunk):
        sizes["shrunk"] = int(shrunk["bytes"].iloc[0])
    return SpeedLesson(
        sparsity=masks.sparsity(),
        sizes=sizes,
        report=report,
        device=str(report.attrs.get("device", "cpu")),
    )


def size_figure(sizes: dict[str, int]) -> go.Figure:
    """Bytes of each form (:func:`prunelab.figures.size_bars`), a form as big as dense drawn
    in dense's grey and marked "same": the masked model is no larger, just no smaller."""
    fig = figures.size_bars(sizes, title="Bytes of the model")
    bars = fig.data[0]
    dense = next(iter(sizes.values()))
    same = [size == dense for size in sizes.values()]
    bars.text = [
        "same" if equal and i else text
        for i, (equal, text) in enumerate(zip(same, bars.text, strict=True))
    ]
    bars.marker.color = [
        bars.marker.color[0] if equal else colour
        for equal, colour in zip(same, bars.marker.color, strict=True)
    ]
    return fig


def speed_figure(report: pd.DataFrame) -> go.Figure:
    """Measured time of each variant over dense's (:func:`prunelab.figures.speed_bars`),
    without the line's label, which would cover the bars' own labels at 1.00x."""
    device = report.attrs.get("device", "cpu")
    fig = figures.speed_bars(report, title=f"Measured time, on {device}")
    fig.layout.annotations = ()
    return fig


def two_four_note(device: torch.device | str | None = None) -> str:
    """What 2:4 sparsity would give on ``device`` (None: this machine's best), plainly."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    reason = semi_structured_support(device)
    if reason is not None:
        return f"{reason}. A CPU has no such hardware: 2:4 zeros run as slowly as dense ones."
    return (
        "This GPU has sparse tensor cores: Linear layers pruned 2:4 (the n:m strategy) can run "
        "up to 2x faster in half precision; speed_report measures them as its '2:4 fp16' row."
    )
