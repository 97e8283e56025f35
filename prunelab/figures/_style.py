"""Colours and shared helpers of every figure: any tensor -> 2-D matrix -> pooled heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

_KEPT = "#2c7fb8"
# pruned cells: a colour that no kept weight can take on the red-white-blue weight scale
# (white there means a weight near zero, which is not the same as a removed one)
_PRUNED = "#2b2b2b"
_REFERENCE = "#bdbdbd"  # the dense reference bar of size and speed charts
_EMPTY = "#d62728"
_OVERLAP = (  # code -> (label, colour); codes are the z values of mask_overlap's heatmap
    ("kept by both", _KEPT),
    ("only {a} keeps", "#f28e2b"),
    ("only {b} keeps", "#9467bd"),
    ("pruned by both", _PRUNED),
)
_LAYOUTS = ("matrix", "filters")
_KERNEL_DIMS = {3: "k", 4: "kh x kw", 5: "kd x kh x kw"}


# ----------------------------------------------------------------------------------------
# Shared helpers: any tensor -> 2-D matrix -> pooled heatmap


def _to_numpy(value: object, *, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.float()  # numpy has no bfloat16
        array = value.numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise TypeError(
            f"{what} must be a torch tensor or a numpy array, got {type(value).__name__}"
        )
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{what} must hold real numbers or bools, got dtype {array.dtype}")
    return array


def _checked(value: object, *, what: str) -> np.ndarray:
    array = _to_numpy(value, what=what)
    if array.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension, got a scalar")
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {array.shape}); there is nothing to plot")
    return array


def _as_mask(value: object, *, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = _checked(value, what=what)
    if shape is not None and array.shape != shape:
        raise ValueError(
            f"{what} has shape {array.shape} but the weight has shape {shape}; "
            "a mask must have the weight's full shape"
        )
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{what} must be bool (True = kept) or hold only 0 and 1")
        array = array.astype(bool)
    return array


def _matrix(array: np.ndarray) -> np.ndarray:
    """Matrix layout: rows = dim 0 (output), columns = all other dims flattened.

    A conv weight (O, I, k...) is laid out as O x (k... x I), the input channel varying
    fastest: N:M groups run along the input dimension (``prunelab.core.granularity.NM``), so each
    group of M sits in M adjacent columns and a 2:4 mask shows as a comb, as on a Linear.
    """
    if array.ndim == 1:
        return array.reshape(1, -1)
    if array.ndim > 2:
        array = np.moveaxis(array, 1, -1)
    return array.reshape(array.shape[0], -1)


def _matrix_titles(shape: tuple[int, ...]) -> tuple[str, str]:
    """(x title, y title) of the matrix layout of a tensor of this shape."""
    if len(shape) == 1:
        return "element", "(one row)"
    if len(shape) == 2:
        return "input feature", "output feature"
    kernel = _KERNEL_DIMS.get(len(shape), f"{len(shape) - 2} kernel dims")
    return f"input ({kernel} x in, input channel fastest)", "output channel"


def _filters(array: np.ndarray) -> np.ndarray:
    """Filters layout: row of tiles per output channel, one kh x kw tile per input channel.

    A 1-cell NaN gap separates tiles along an axis where a tile is more than one cell long.
    """
    if array.ndim not in (3, 4):
        raise ValueError(
            f"layout='filters' needs a Conv1d/Conv2d weight (3-D or 4-D), got shape "
            f"{array.shape}; use layout='matrix'"
        )
    out_ch, in_ch, kh, kw = array.reshape(array.shape[0], array.shape[1], -1, array.shape[-1]).shape
    gap_r, gap_c = int(kh > 1), int(kw > 1)
    grid = np.full((out_ch, kh + gap_r, in_ch, kw + gap_c), np.nan)
    grid[:, :kh, :, :kw] = array.reshape(out_ch, in_ch, kh, kw).transpose(0, 2, 1, 3)
    grid = grid.reshape(out_ch * (kh + gap_r), in_ch * (kw + gap_c))
    return grid[: grid.shape[0] - gap_r, : grid.shape[1] - gap_c]


def _block_shape(rows: int, cols: int, max_cells: int) -> tuple[int, int]:
    if rows * cols <= max_cells:
        return 1, 1
    side = max(1, int(math.sqrt(rows * cols / max_cells)))
    br, bc = min(side, rows), min(side, cols)
    while math.ceil(rows / br) * math.ceil(cols / bc) > max_cells:
        # grow the block along the axis that still has more output cells
        if (math.ceil(rows / br) >= math.ceil(cols / bc) and br < rows) or bc == cols:
            br += 1
        else:
            bc += 1
    return br, bc


def _pool(matrix: np.ndarray, max_cells: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Block means (NaN cells ignored) so that the result has at most ``max_cells`` cells."""
    rows, cols = matrix.shape
    br, bc = _block_shape(rows, cols, max_cells)
    if (br, bc) == (1, 1):
        return matrix, (1, 1)
    padded = np.full((math.ceil(rows / br) * br, math.ceil(cols / bc) * bc), np.nan)
    padded[:rows, :cols] = matrix
    blocks = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    count = finite.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count, (br, bc)


def _pool_note(block: tuple[int, int], what: str) -> str | None:
    if block == (1, 1):
        return None
    size = f"{block[0]}x{block[1]}"
    return f"pooled {size}: each cell is {what} a {size} block"


def _coords(n: int, block: int) -> np.ndarray:
    # block centres in the unpooled grid, so ticks and hover read in original indices
    return np.arange(n) * block + (block - 1) / 2


def _heatmap(
    z: np.ndarray,
    block: tuple[int, int],
    hover: tuple[str, str],
    *,
    value: str = "%{z:.4g}",
    **kwargs: object,
) -> go.Heatmap:
    x_title, y_title = hover
    where = " (block centre)" if block != (1, 1) else ""
    return go.Heatmap(
        z=z.astype(np.float32),
        x=_coords(z.shape[1], block[1]),
        y=_coords(z.shape[0], block[0]),
        hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}{where}<br>{value}",
        **kwargs,
    )


def _stepped(colours: Sequence[str]) -> list[list]:
    """Discrete colour scale: code k in 0..n-1 (zmin=-0.5, zmax=n-0.5) gets colours[k]."""
    n = len(colours)
    return [[(k + edge) / n, colour] for k, colour in enumerate(colours) for edge in (0, 1)]


def _two_colour_style(removed: str) -> dict:
    """Heatmap style for a 0/1 mask: two colours, a legend-like colour bar."""
    return {
        "colorscale": _stepped([_PRUNED, _KEPT]),
        "zmin": -0.5,
        "zmax": 1.5,
        "colorbar": {"tickvals": [0, 1], "ticktext": [removed, "kept"]},
        "value": "kept %{z}",
    }


def _title(main: str, notes: Sequence[str | None]) -> dict:
    notes = [n for n in notes if n]
    text = main + (f"<br><sup>{'; '.join(notes)}</sup>" if notes else "")
    return {"text": text}


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _sparsity_note(mask: np.ndarray) -> str:
    kept = int(mask.sum())
    return f"sparsity {1 - kept / mask.size:.1%} ({kept:,} of {mask.size:,} kept)"


# the two panels of a before/after figure, side by side (as make_subplots(1, 2) lays them out)
_LEFT, _RIGHT = (0.0, 0.45), (0.55, 1.0)


# the axes of the "before" and "after" panels' traces
_PANEL_AXES = [{"xaxis": "x", "yaxis": "y"}, {"xaxis": "x2", "yaxis": "y2"}]


def _panel_title(text: str, domain: tuple[float, float]) -> dict:
    """A panel's title above it, as make_subplots' subplot_titles places it."""
    return {
        "text": text,
        "x": (domain[0] + domain[1]) / 2,
        "y": 1.0,
        "xref": "paper",
        "yref": "paper",
        "xanchor": "center",
        "yanchor": "bottom",
        "showarrow": False,
        "font": {"size": 16},
    }


# A threshold's band and dashed lines as plain shapes, set in one update: add_vrect and
# add_vline resolve subplots on every call (several ms each; histograms with a threshold are
# rebuilt on every move of the threshold slider)
def _vline(x: float) -> dict:
    return {
        "type": "line",
        "x0": x,
        "x1": x,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "y domain",
        "line": {"color": _EMPTY, "dash": "dash"},
    }


def _vband(low: float, high: float) -> dict:
    return {
        "type": "rect",
        "x0": low,
        "x1": high,
        "xref": "x",
        "y0": 0,
        "y1": 1,
        "yref": "y domain",
        "fillcolor": _EMPTY,
        "opacity": 0.15,
        "line": {"width": 0},
        "layer": "below",
    }


def _matrix_heatmap_axes(fig: go.Figure, titles: tuple[str, str]) -> None:
    fig.update_xaxes(title_text=titles[0])
    fig.update_yaxes(title_text=titles[1], autorange="reversed")


# ----------------------------------------------------------------------------------------
