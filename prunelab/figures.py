"""Figures: data in, ``plotly.graph_objects.Figure`` out.

Pure builders with no Streamlit and no file I/O; every figure renders in Jupyter as it is and
goes to ``st.plotly_chart`` unchanged. Tensors and numpy arrays are both accepted. Heatmaps of
large layers are pooled (block means) so a figure never holds more than ``max_cells`` cells,
and the title says how.

>>> import torch
>>> fig = mask_pattern(torch.tensor([[True, False], [False, False]]))
>>> "sparsity 75.0%" in fig.layout.title.text
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .masks import Masks, check_masks

__all__ = [
    "activation_histogram",
    "activation_mask",
    "channel_apoz",
    "channel_magnitudes",
    "channel_ranges",
    "compare_bars",
    "layer_sparsity",
    "mask_overlap",
    "mask_pattern",
    "schedule_plot",
    "sensitivity_heatmap",
    "size_bars",
    "sparsity_curves",
    "speed_bars",
    "training_curves",
    "weight_heatmap",
    "weight_histogram",
]

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


def _check_count(value: object, *, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _matrix(array: np.ndarray) -> np.ndarray:
    """Matrix layout: rows = dim 0 (output), columns = all other dims flattened.

    A conv weight (O, I, k...) is laid out as O x (k... x I), the input channel varying
    fastest: N:M groups run along the input dimension (``prunelab.granularity.NM``), so each
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
# Builders


def weight_heatmap(
    weight: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    *,
    title: str | None = None,
    layout: str = "matrix",
    max_cells: int = 250_000,
) -> go.Figure:
    """Heatmap of a weight tensor; before and after pruning side by side when given a mask.

    Colours are a diverging scale centred on zero (red negative, white zero, blue positive),
    symmetric around zero and shared by both panels through one colour bar. The "after"
    panel shows ``weight`` where ``mask`` is True; pruned weights are NaN there and drawn
    by a third trace, "pruned", in one dark colour that is not on the weight scale, so a
    removed weight never looks like a kept weight near zero. Pooled, a block is drawn as
    pruned when all of its weights are, else as the mean of its weights with the pruned
    ones counted as 0.

    Rows are dim 0 of the weight (output channels/features). A transposed convolution keeps
    its output channels in dim 1: pass ``weight.movedim(1, 0)`` (and the mask likewise).

    Args:
        weight: The weight, any shape with at least one element. 1-D shows as one row.
        mask: Bool mask (True = kept) of the weight's shape, or 0/1 values.
        title: Main title (default: the shape); notes on sparsity and pooling go below it.
        layout: ``"matrix"``: out x (in*kh*kw...), dims after the first flattened.
            ``"filters"`` (Conv1d/Conv2d weights only): one row of tiles per output
            channel, one kh x kw tile per input channel, tiles separated by a 1-cell NaN gap
            wherever a tile is more than one cell long; for an (O, I, kh, kw) weight with
            kh, kw > 1 the grid is (O*kh + O-1) x (I*kw + I-1).
        max_cells: Largest number of cells per panel; bigger grids are pooled (block means,
            NaN gaps ignored) and the title says so.

    Returns:
        A Figure with one Heatmap ("weights"), or three ("before", "after", "pruned") when
        masked; "pruned" is 1 on the pruned cells of the "after" panel and NaN elsewhere.

    Raises:
        ValueError: Empty weight, mask of another shape, unknown layout, or a "filters"
            layout for a weight that is not 3-D or 4-D.

    >>> w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    >>> fig = weight_heatmap(w, w.abs() > 1)
    >>> [t.name for t in fig.data], fig.data[1].z.tolist()
    (['before', 'after', 'pruned'], [[nan, -2.0], [nan, 3.0]])
    """
    array = _checked(weight, what="weight").astype(np.float64)
    max_cells = _check_count(max_cells, what="max_cells")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    panels = {"weights": array}
    notes: list[str | None] = []
    kept = None
    if mask is not None:
        kept = _as_mask(mask, what="mask", shape=array.shape)
        panels = {"before": array, "after": np.where(kept, array, 0.0)}
        notes.append(_sparsity_note(kept))
    arrange = _filters if layout == "filters" else _matrix
    grids = {name: arrange(a) for name, a in panels.items()}
    if layout == "filters":
        kernel = "k" if array.ndim == 3 else "kw"
        titles = (
            f"input channel (tiles {kernel} wide)",
            "output channel" + (" (tiles kh tall)" if array.ndim == 4 else ""),
        )
        hover = ("grid column", "grid row")  # hover shows grid positions, not channels
    else:
        titles = hover = _matrix_titles(array.shape)
    pooled = {name: _pool(g, max_cells) for name, g in grids.items()}
    block = next(iter(pooled.values()))[1]
    if kept is not None:
        fraction_kept, _ = _pool(arrange(kept.astype(np.float64)), max_cells)
        removed = fraction_kept == 0  # NaN gaps of the filters layout compare False
        pooled["after"] = (np.where(removed, np.nan, pooled["after"][0]), block)
    notes.append(_pool_note(block, "the mean of"))
    limit = float(np.nanmax(np.abs(array))) if np.isfinite(array).any() else 0.0
    limit = limit or 1.0

    # One Figure built from finished traces and one layout: make_subplots and a chain of
    # update_* calls validate the layout again at each step (tens of ms; this figure is
    # rebuilt on every Prune slider move that changes the layer's mask).
    axes = _PANEL_AXES if mask is not None else [{}]
    traces = [
        _heatmap(z, block, hover, name=name, coloraxis="coloraxis", **axis)
        for (name, (z, _)), axis in zip(pooled.items(), axes, strict=False)
    ]
    spec: dict = {}
    if kept is not None:
        traces.append(
            _heatmap(
                np.where(removed, 1.0, np.nan),
                block,
                hover,
                name="pruned",
                value="pruned (removed)",
                colorscale=[[0, _PRUNED], [1, _PRUNED]],
                showscale=False,
                **axes[1],
            )
        )
        spec["annotations"] = [
            _panel_title(text, domain)
            for text, domain in (("before", _LEFT), ("after (pruned: black)", _RIGHT))
        ]
    spec.update(
        title=_title(title or f"Weights {_shape_text(array.shape)}", notes),
        coloraxis={
            "colorscale": "RdBu",
            "cmid": 0.0,
            "cmin": -limit,
            "cmax": limit,
            "colorbar": {"title": {"text": "weight"}},
        },
        xaxis={"title": {"text": titles[0]}},
        yaxis={"title": {"text": titles[1]}, "autorange": "reversed"},
    )
    if kept is not None:
        spec["xaxis"].update(domain=_LEFT, anchor="y")
        spec["yaxis"].update(anchor="x")
        # one x title, under the left panel: two long ones (the matrix layout's) overlap
        spec["xaxis2"] = {"domain": _RIGHT, "anchor": "y2"}
        spec["yaxis2"] = {
            "anchor": "x2",
            "matches": "y",
            "showticklabels": False,
            "autorange": "reversed",
        }
    fig = go.Figure(data=traces, layout=spec)
    if layout == "filters":
        _filter_ticks(fig, array.shape, mask is not None)
    return fig


def _filter_ticks(fig: go.Figure, shape: tuple[int, ...], two: bool) -> None:
    # label tile centres with channel numbers when there are few enough to read
    kh = shape[2] if len(shape) == 4 else 1
    kw = shape[-1]
    for size, count, update in (
        (kh, shape[0], fig.update_yaxes),
        (kw, shape[1], fig.update_xaxes),
    ):
        if count <= 32:
            step = size + int(size > 1)
            centres = [i * step + (size - 1) / 2 for i in range(count)]
            update(tickvals=centres, ticktext=[str(i) for i in range(count)])
    if two:
        fig.layout.yaxis2.showticklabels = False  # the "after" panel shares the left's rows


def mask_pattern(
    mask: torch.Tensor | np.ndarray,
    *,
    title: str | None = None,
    max_cells: int = 250_000,
) -> go.Figure:
    """Which weights a mask keeps: kept cells in blue, pruned cells in black.

    Black is the colour of pruned weights in every figure (see :func:`weight_heatmap`).

    Laid out like :func:`weight_heatmap`'s matrix layout (rows = dim 0). A pooled mask shows
    the fraction kept in each block on a continuous 0..1 scale instead, and says so.

    Args:
        mask: Bool mask (True = kept) of any shape, or 0/1 values.
        title: Main title (default: the shape); sparsity and pooling notes go below it.
        max_cells: Largest number of cells; bigger masks are pooled.

    Returns:
        A Figure with one Heatmap named "mask".

    Raises:
        ValueError: Empty mask or values other than 0/1.

    >>> fig = mask_pattern(torch.tensor([[True, False, True]]))
    >>> fig.data[0].z.tolist(), list(fig.data[0].colorbar.ticktext)
    ([[1.0, 0.0, 1.0]], ['pruned', 'kept'])
    """
    kept = _as_mask(mask, what="mask")
    max_cells = _check_count(max_cells, what="max_cells")
    z, block = _pool(_matrix(kept).astype(np.float64), max_cells)
    titles = _matrix_titles(kept.shape)
    if block == (1, 1):
        style = _two_colour_style("pruned")
    else:
        style = {
            "colorscale": [[0, _PRUNED], [1, _KEPT]],
            "zmin": 0,
            "zmax": 1,
            "colorbar": {"title": {"text": "fraction kept"}},
            "value": "fraction kept %{z:.2f}",
        }
    fig = go.Figure(_heatmap(z, block, titles, name="mask", **style))
    notes = [_sparsity_note(kept), _pool_note(block, "the fraction kept in")]
    fig.update_layout(title=_title(title or f"Mask {_shape_text(kept.shape)}", notes))
    _matrix_heatmap_axes(fig, titles)
    return fig


def weight_histogram(
    weight: torch.Tensor | np.ndarray,
    threshold: float | None = None,
    *,
    bins: int = 80,
    title: str | None = None,
    log_y: bool = False,
    symmetric: bool | None = None,
) -> go.Figure:
    """Histogram of values, with a pruning cut-off and the band it removes marked.

    The counts are computed here (``numpy.histogram``) and drawn as bars, so the figure stays
    small however many weights there are. Non-finite values are left out.

    With a threshold ``t`` the pruned band is shaded and labelled with the fraction of values
    inside it. Symmetric (a magnitude cut-off on weights): dashed lines at -t and +t, band
    [-t, t], fraction with ``|w| <= t``. Not symmetric (non-negative scores): one dashed line
    at t, band [min, t], fraction with ``s <= t``. By default the cut-off is symmetric when
    the data has negative values; ``symmetric`` makes it explicit.

    Args:
        weight: Values of any shape (weights or scores).
        threshold: The cut-off t >= 0; values at or below it (in magnitude) are pruned.
        bins: Number of bins.
        title: Main title; the fraction in the band goes below it.
        log_y: Log-scale counts (useful when pruned zeros dominate).
        symmetric: Whether t is a magnitude cut-off (see above); None decides from the data.

    Returns:
        A Figure with one Bar trace named "values"; with a threshold also a shaded rect and
        dashed line shapes.

    Raises:
        ValueError: No finite value, a negative or non-finite threshold, or bins < 1.
        TypeError: A threshold that is not a number.

    >>> fig = weight_histogram(torch.tensor([-2.0, -0.5, 0.1, 0.3, 1.5]), 0.5, bins=4)
    >>> rect = [s for s in fig.layout.shapes if s.type == "rect"][0]
    >>> rect.x0, rect.x1
    (-0.5, 0.5)
    """
    values = _checked(weight, what="weight").astype(np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("weight has no finite value; there is nothing to plot")
    bins = _check_count(bins, what="bins")
    if symmetric is None:
        symmetric = bool((values < 0).any())
    counts, edges = np.histogram(values, bins=bins)
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=counts,
            width=np.diff(edges),
            name="values",
            marker={"color": _KEPT, "line": {"width": 0}},
            hovertemplate="%{x:.4g}: %{y} values<extra></extra>",
        )
    )
    notes = [f"{values.size:,} values, {bins} bins"]
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
            raise TypeError(f"threshold must be a number >= 0, got {threshold!r}")
        t = float(threshold)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        if symmetric:
            low, inside, band = -t, np.abs(values) <= t, f"[-{t:.3g}, {t:.3g}]"
        else:
            low, inside, band = min(float(values.min()), t), values <= t, f"<= {t:.3g}"
        lines = (-t, t) if symmetric else (t,)
        fig.update_layout(shapes=[*(_vline(x) for x in lines), _vband(low, t)])
        share = f"{inside.mean():.1%} of values {band} (pruned)"
        fig.add_annotation(
            x=t, y=1, yref="y domain", text=share, showarrow=False, xanchor="left", yanchor="top"
        )
        notes.append(share)
    fig.update_layout(title=_title(title or "Weight values", notes), bargap=0, showlegend=False)
    fig.update_xaxes(title_text="weight value" if symmetric else "value")
    fig.update_yaxes(title_text="count (log scale)" if log_y else "count")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _channel_kept(mask: object, channels: int, dim: int) -> np.ndarray:
    kept = _as_mask(mask, what="mask")
    if not -kept.ndim <= dim < kept.ndim:
        raise ValueError(f"dim={dim} is out of range for a mask of shape {kept.shape}")
    if kept.shape[dim] != channels:
        raise ValueError(
            f"mask has {kept.shape[dim]} channels along dim {dim} (shape {kept.shape}) but "
            f"there are {channels} scores; give a 1-D channel mask or the weight's full mask"
        )
    other = tuple(d for d in range(kept.ndim) if d != dim % kept.ndim)
    return kept.any(axis=other) if other else kept


def channel_magnitudes(
    scores: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    *,
    title: str | None = None,
    sort: bool = False,
    dim: int = 0,
) -> go.Figure:
    """One bar per channel: its score (e.g. L1 or L2 norm), kept and pruned in two colours.

    Args:
        scores: 1-D, one score per channel (e.g. the per-channel scores of
            ``Pruner.scores()`` for a channel strategy, or ``w.abs().sum(dim=(1, 2, 3))``).
        mask: Which channels are kept: a 1-D channel mask, or a full weight mask, where a
            channel is kept if any of its weights is kept.
        title: Main title; the number of kept channels goes below it.
        sort: Order bars by score, lowest first (the ones a threshold removes first), the
            x axis then labelled with channel numbers in that order.
        dim: The channel dimension of a full mask (0 = output channels; 1 for the output
            channels of a transposed convolution).

    Returns:
        A Figure with two Bar traces "kept" and "pruned", or one named "score" without mask.

    Raises:
        ValueError: Scores not 1-D, empty or non-finite; a mask whose channel count differs.

    >>> fig = channel_magnitudes(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([True, False, True]))
    >>> [(t.name, t.x.tolist()) for t in fig.data]
    [('kept', [0, 2]), ('pruned', [1])]
    """
    values = _checked(scores, what="scores").astype(np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"scores must be 1-D (one per channel), got shape {values.shape}; reduce a "
            "weight to channels first, e.g. w.abs().sum(dim=(1, 2, 3)) for a Conv2d"
        )
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or inf values")
    channels = np.arange(values.size)
    groups = {"score": np.ones(values.size, dtype=bool)}
    notes: list[str] = []
    if mask is not None:
        kept = _channel_kept(mask, values.size, dim)
        groups = {"kept": kept, "pruned": ~kept}
        notes.append(f"{int(kept.sum())} of {values.size} channels kept")
    fig = go.Figure()
    for name, member in groups.items():
        fig.add_trace(
            go.Bar(
                x=channels[member],
                y=values[member],
                name=name,
                marker_color=_PRUNED if name == "pruned" else _KEPT,
                hovertemplate="channel %{x}: %{y:.4g}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(title=_title(title or "Channel scores", notes), barmode="overlay", bargap=0.1)
    if sort:
        order = np.argsort(values, kind="stable")
        fig.update_xaxes(
            type="category",
            categoryorder="array",
            categoryarray=order.tolist(),
            title_text="channel (sorted by score)",
        )
    else:
        fig.update_xaxes(title_text="channel")
    fig.update_yaxes(title_text="score")
    return fig


def layer_sparsity(
    masks: Masks | Mapping[str, torch.Tensor], *, title: str | None = None
) -> go.Figure:
    """Sparsity of each layer as horizontal bars, in model order, with the overall sparsity.

    Layers with nothing kept (100% sparse: they output only their bias) are drawn in red as a
    separate trace. A dashed line marks the overall sparsity (weighted by element count).

    Args:
        masks: A :class:`prunelab.Masks` (or a mapping fqn -> bool tensor).
        title: Main title; overall sparsity and the number of empty layers go below it.

    Returns:
        A Figure with a Bar trace "layers" and, when some layer is empty, one named "empty".

    Raises:
        ValueError: No masks.

    >>> m = Masks({"a.weight": torch.tensor([True, False]), "b.weight": torch.tensor([False])})
    >>> fig = layer_sparsity(m)
    >>> [(t.name, list(t.x)) for t in fig.data]
    [('layers', [50.0]), ('empty', [100.0])]
    """
    if not isinstance(masks, Masks):
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be prunelab.Masks, got {type(masks).__name__}")
        masks = Masks(masks)
    table = masks.per_layer()
    if table.empty:
        raise ValueError("masks is empty; there is no layer to plot")
    overall = masks.sparsity()
    table = table.assign(percent=table["sparsity"] * 100, shape=table["shape"].map(_shape_text))
    fig = go.Figure()
    for name, rows, colour in (
        ("layers", table[~table["empty"]], _KEPT),
        ("empty", table[table["empty"]], _EMPTY),
    ):
        if rows.empty:
            continue
        fig.add_trace(
            go.Bar(
                x=rows["percent"].tolist(),
                y=rows["fqn"].tolist(),
                orientation="h",
                name=name,
                marker_color=colour,
                customdata=rows[["kept", "elements", "shape"]].to_numpy(),
                hovertemplate=(
                    "%{y} (%{customdata[2]})<br>sparsity %{x:.1f}%<br>"
                    "kept %{customdata[0]:,} of %{customdata[1]:,}<extra></extra>"
                ),
            )
        )
    fig.add_vline(
        x=overall * 100,
        line_dash="dash",
        annotation_text=f"overall {overall:.1%}",
        annotation_position="top",
    )
    empty = int(table["empty"].sum())
    notes = [f"overall {overall:.1%}", f"{empty} empty layer(s)" if empty else None]
    fig.update_layout(
        title=_title(title or "Sparsity per layer", notes),
        barmode="overlay",
        height=max(320, 28 * len(table) + 140),
    )
    fig.update_xaxes(title_text="sparsity (% of weights zeroed)", range=[0, 100])
    fig.update_yaxes(
        title_text="layer",
        type="category",
        categoryorder="array",
        categoryarray=table["fqn"].tolist(),
        autorange="reversed",
    )
    return fig


def _layer_mask(masks: Masks, fqn: str, which: str) -> np.ndarray:
    check_masks(masks, what=which)
    if fqn not in masks:
        raise ValueError(f"{which} has no mask for {fqn!r}; it has: {list(masks)[:12]}")
    return _as_mask(masks[fqn], what=f"{which}[{fqn!r}]")


def mask_overlap(
    masks_a: Masks,
    masks_b: Masks,
    fqn: str,
    *,
    names: tuple[str, str] = ("A", "B"),
    max_cells: int = 250_000,
) -> go.Figure:
    """Where two mask sets agree and disagree on one layer, as a 4-category heatmap.

    Cells are 0 = kept by both, 1 = only A keeps, 2 = only B keeps, 3 = pruned by both,
    laid out like :func:`weight_heatmap`'s matrix layout. The title gives the IoU of the kept
    sets, as in :meth:`prunelab.Masks.overlap`. A pooled layer shows the most common category
    of each block (ties go to the lower code), and the title says so.

    Args:
        masks_a: First mask set (e.g. from one criterion).
        masks_b: Second mask set.
        fqn: The layer to compare.
        names: Labels for the two sets, used in the colour bar and the title.
        max_cells: Largest number of cells; bigger layers are pooled.

    Returns:
        A Figure with one Heatmap named "overlap".

    Raises:
        ValueError: A set has no mask for ``fqn``, the masks differ in shape, or ``names``
            is not two strings.

    >>> a = Masks({"w": torch.tensor([[True, True, False, False]])})
    >>> b = Masks({"w": torch.tensor([[True, False, True, False]])})
    >>> fig = mask_overlap(a, b, "w", names=("magnitude", "random"))
    >>> fig.data[0].z.tolist(), "IoU of kept sets 0.333" in fig.layout.title.text
    ([[0.0, 1.0, 2.0, 3.0]], True)
    """
    if isinstance(names, str) or len(names) != 2 or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be two strings, e.g. ('magnitude', 'random'); got {names!r}")
    max_cells = _check_count(max_cells, what="max_cells")
    a = _layer_mask(masks_a, fqn, "masks_a")
    b = _layer_mask(masks_b, fqn, "masks_b")
    # Masks.overlap checks the shapes and defines the IoU; one layer keeps it cheap
    iou = Masks({fqn: masks_a[fqn]}).overlap(Masks({fqn: masks_b[fqn]}))["iou"].iloc[0]
    codes = _matrix(np.where(a, np.where(b, 0, 1), np.where(b, 2, 3)))
    fractions = [_pool((codes == k).astype(np.float64), max_cells) for k in range(4)]
    block = fractions[0][1]
    z = codes if block == (1, 1) else np.argmax([f for f, _ in fractions], axis=0)
    labels = [label.format(a=names[0], b=names[1]) for label, _ in _OVERLAP]
    colours = [colour for _, colour in _OVERLAP]
    titles = _matrix_titles(a.shape)
    fig = go.Figure(
        _heatmap(
            z,
            block,
            titles,
            name="overlap",
            zmin=-0.5,
            zmax=3.5,
            colorscale=_stepped(colours),
            colorbar={"tickvals": [0, 1, 2, 3], "ticktext": labels},
            value="category %{z} (see colour bar)",
        )
    )
    notes = [
        f"IoU of kept sets {iou:.3f}",
        _pool_note(block, "the most common category in"),
    ]
    fig.update_layout(title=_title(f"{fqn}: {names[0]} vs {names[1]}", notes))
    _matrix_heatmap_axes(fig, titles)
    return fig


_METRIC_TITLES = {
    "accuracy": "accuracy",
    "loss": "mean loss",
    "agreement": "top-1 agreement with the dense model",
    "kl": "KL(dense || pruned)",
    "energy_removed": "share of the weights' energy removed",
}
_MANY_CURVES = 10  # above this, curves take colours in model order and the legend moves below


SHARE_METRICS = ("accuracy", "agreement", "energy_removed")  # in [0, 1]: drawn as percent


def _metric_words(metric: str, table: object = None) -> str:
    """Plain words for a metric column; a drop says of which metric (table.attrs["metric"])."""
    if metric == "drop":
        base = getattr(table, "attrs", {}).get("metric")
        if base == "energy_removed":  # the data-free drop is the share removed itself
            return _METRIC_TITLES[base]
        return f"drop in {_METRIC_TITLES.get(base, base)}" if base else "drop"
    return _METRIC_TITLES.get(metric, metric)


def _unit(metric: str, table: object = None) -> tuple[float, str]:
    """(scale, unit) of a metric column: shares in percent, drops of shares in points."""
    if metric in SHARE_METRICS:
        return 100.0, "%"
    base = getattr(table, "attrs", {}).get("metric")
    if metric == "drop" and base in SHARE_METRICS:
        return 100.0, "%" if base == "energy_removed" else " points"
    return 1.0, ""


def _curve_name(name: object) -> str:
    # a layer's curve is named by its module: ".weight" repeats on every entry of the legend
    text = str(name)
    return text.removesuffix(".weight") if text.endswith(".weight") else text


def _many_curves_legend(fig: go.Figure, count: int) -> None:
    """Many curves (a model's layers): no legend, which would not fit, but colours in model
    order with a colour bar from the first layer to the last; hover names each curve."""
    import plotly.colors

    if count <= _MANY_CURVES:
        return
    colours = plotly.colors.sample_colorscale("Viridis", [i / (count - 1) for i in range(count)])
    names = [trace.name for trace in fig.data]
    for trace, colour in zip(fig.data, colours, strict=True):
        trace.line.color = trace.marker.color = colour
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name="layer order",
            showlegend=False,
            hoverinfo="skip",
            marker={
                "color": [0, count - 1],
                "colorscale": "Viridis",
                "cmin": 0,
                "cmax": count - 1,
                "showscale": True,
                "colorbar": {
                    "title": {"text": f"{count} layers,<br>in model order"},
                    "tickvals": [0, count - 1],
                    "ticktext": [names[0], names[-1]],
                    "thickness": 12,
                },
            },
        )
    )
    fig.update_layout(showlegend=False)


def sparsity_curves(
    table: object, *, metric: str = "accuracy", by: str = "strategy", title: str | None = None
) -> go.Figure:
    """Metric-vs-sparsity curves, one line per strategy (``prunelab.sweeps.sweep``'s table) or
    per layer (``by="layer"`` on a sensitivity table).

    Args:
        table: A DataFrame with columns ``by``, ``sparsity`` and ``metric``.
        metric: Which column to plot: accuracy, loss, agreement, kl, drop, ...
        by: The column that names each curve.
        title: Main title.

    Returns:
        A Figure with one Scatter trace (lines and markers) per curve, named after it (a
        layer's ".weight" left out). With more than 10 curves (a model's layers), colours run
        from dark to light in table order, a colour bar (one more trace, "layer order") names
        the first and the last, the legend is hidden and hovering a curve names it.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"strategy": ["a", "a"], "sparsity": [0.0, 0.5], "accuracy": [0.9, 0.8]})
    >>> [t.name for t in sparsity_curves(df).data]
    ['a']
    """
    frame = _frame(table, (by, "sparsity", metric))
    scale, unit = _unit(metric, table)
    fig = go.Figure()
    label = _metric_words(metric, table)
    for name, rows in frame.groupby(by, sort=False):
        rows = rows.sort_values("sparsity")
        fig.add_trace(
            go.Scatter(
                x=(rows["sparsity"] * 100).tolist(),
                y=(rows[metric] * scale).tolist(),
                mode="lines+markers",
                name=_curve_name(name),
                hovertemplate=f"{name}<br>sparsity %{{x:.1f}}%<br>{label} "
                f"%{{y:.{'2f' if unit else '3g'}}}{unit}<extra></extra>",
            )
        )
    many = len(fig.data) > _MANY_CURVES
    _many_curves_legend(fig, len(fig.data))
    notes = ["hover a curve for its layer" if many else None]
    fig.update_layout(title=_title(title or f"{label[0].upper() + label[1:]} vs sparsity", notes))
    fig.update_xaxes(title_text="sparsity (% of weights zeroed)", range=[0, 100])
    fig.update_yaxes(title_text=label + (f" ({unit.strip()})" if unit else ""))
    return fig


def _frame(table: object, columns: Sequence[str]):
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"table lacks column(s) {missing}; it needs {', '.join(columns)} "
            f"(have {list(table.columns)})"
        )
    if table.empty:
        raise ValueError("table is empty; there is nothing to plot")
    return table


def _colour_title(value: str, metric: str | None) -> str:
    if metric == "energy_removed" and value in ("drop", metric):
        return "removed"
    return value if value == "drop" else _metric_words(value)


def sensitivity_heatmap(
    table: object, *, value: str = "drop", title: str | None = None
) -> go.Figure:
    """Layer x sparsity heatmap of a sensitivity table (``prunelab.sweeps.sensitivity``).

    Cells show how much worse the metric gets when only that layer is pruned to that
    sparsity; skipped (early-stopped) points are blank.

    Args:
        table: A DataFrame with layer, sparsity and ``value`` columns.
        value: Column to colour by (``drop`` by default).
        title: Main title.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"layer": ["a", "a", "b", "b"], "sparsity": [0.5, 0.9] * 2,
    ...                    "drop": [0.0, 0.1, 0.2, 0.5]})
    >>> fig = sensitivity_heatmap(df)
    >>> list(fig.data[0].y), fig.data[0].z.tolist()
    (['a', 'b'], [[0.0, 0.1], [0.2, 0.5]])
    """
    frame = _frame(table, ("layer", "sparsity", value))
    grid = frame.pivot_table(index="layer", columns="sparsity", values=value, dropna=False)
    grid = grid.reindex(list(dict.fromkeys(frame["layer"])))
    metric = getattr(table, "attrs", {}).get("metric")
    words = _metric_words(value, table)
    scale, unit = _unit(value, table)
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy() * scale,
            x=[f"{s:.0%}" for s in grid.columns],
            y=list(grid.index),
            colorscale="Reds",
            zmin=0,
            colorbar={
                "title": _colour_title(value, metric) + (f" ({unit.strip()})" if unit else "")
            },
            hovertemplate="%{y} at %{x}<br>"
            + words
            + (f" %{{z:.2f}}{unit}" if unit else " %{z:.4f}")
            + "<extra></extra>",
        )
    )
    notes = [f"{words} when only that layer is pruned" if metric else None]
    if metric == "energy_removed":
        notes = ["no data: the share of each layer's sum of w² that pruning removes"]
    fig.update_layout(
        title=_title(title or "Per-layer sensitivity", notes),
        height=max(320, 26 * len(grid) + 160),
    )
    fig.update_xaxes(title_text="sparsity of the layer", type="category")
    fig.update_yaxes(title_text="layer", autorange="reversed", type="category")
    return fig


# ----------------------------------------------------------------------------------------
# Activations (statistics from prunelab.activations)

_AFTER = "#f28e2b"
_STATS_NAMES = ("before", "after")


def _layer_stats(value: object, *, what: str):
    from .activations import LayerStats

    if not isinstance(value, LayerStats):
        raise TypeError(
            f"{what} must be a prunelab.activations.LayerStats (one layer of "
            f"activation_stats(...)), got {type(value).__name__}"
        )
    return value


def _check_names(names: object) -> tuple[str, str]:
    if isinstance(names, str) or len(names) != 2 or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be two strings, e.g. ('dense', 'pruned'); got {names!r}")
    return names[0], names[1]


def _pairs(stats: object, after: object, names: object) -> list[tuple[str, object, str]]:
    """(name, stats, colour) for the one or two sets of statistics to draw."""
    first = _layer_stats(stats, what="stats")
    if after is None:
        return [("activations", first, _KEPT)]
    second = _layer_stats(after, what="after")
    if second.channels != first.channels:
        raise ValueError(
            f"after has {second.channels} channels but stats has {first.channels}; compare "
            "the same layer before and after"
        )
    before_name, after_name = _check_names(names)
    return [(before_name, first, _KEPT), (after_name, second, _AFTER)]


def activation_histogram(
    stats: object,
    after: object | None = None,
    *,
    channel: int | None = None,
    threshold: float | None = None,
    names: tuple[str, str] = _STATS_NAMES,
    log_y: bool = False,
) -> go.Figure:
    """Distribution of a layer's activations, and of the same layer after a change, overlaid.

    Bars show the share of values in each bin (so two sets with different ranges or sample
    sizes compare directly). Exact zeros, which a ReLU makes many of, fall in the bin that
    holds 0; the title gives their exact share. With a threshold ``t`` the band
    ``|value| < t`` that activation thresholding zeroes is shaded (from 0 when no value is
    negative).

    Args:
        stats: One layer's :class:`prunelab.activations.LayerStats`.
        after: The same layer's statistics after a change (e.g. with weight masks).
        channel: Draw one channel instead of the whole layer.
        threshold: Shade the band zeroed by this activation threshold.
        names: Legend names of ``stats`` and ``after``.
        log_y: Log-scale shares.

    Returns:
        A Figure with one Bar trace per set of statistics, named "activations" or ``names``.

    Raises:
        TypeError: Statistics that are not LayerStats, or a threshold that is not a number.
        ValueError: A channel out of range, layers of different widths, a negative threshold.

    >>> import torch
    >>> from prunelab.activations import activation_stats
    >>> net = torch.nn.ReLU()
    >>> stats = activation_stats(torch.nn.Sequential(net), torch.randn(50, 3))["0"]
    >>> [t.name for t in activation_histogram(stats, threshold=0.5).data]
    ['activations']
    """
    pairs = _pairs(stats, after, names)
    fig = go.Figure()
    notes: list[str | None] = []
    for name, layer, colour in pairs:
        if channel is None:
            counts, zeros, dead = layer.layer_histogram(), layer.sparsity, len(layer.dead_channels)
        else:
            if isinstance(channel, bool) or not isinstance(channel, int):
                raise TypeError(f"channel must be an int, got {channel!r}")
            if not 0 <= channel < layer.channels:
                raise ValueError(
                    f"channel {channel} is out of range; the layer has {layer.channels} "
                    f"channels (0 to {layer.channels - 1})"
                )
            counts = layer.histogram[channel]
            zeros, dead = float(layer.zero_fraction[channel]), None
        counts = _to_numpy(counts, what="histogram").astype(np.float64)
        edges = _to_numpy(layer.edges, what="edges").astype(np.float64)
        share = counts / max(counts.sum(), 1) * 100
        fig.add_trace(
            go.Bar(
                x=(edges[:-1] + edges[1:]) / 2,
                y=share,
                width=np.diff(edges),
                name=name,
                opacity=0.6 if len(pairs) > 1 else 1.0,
                marker={"color": colour, "line": {"width": 0}},
                hovertemplate=f"{name}<br>%{{x:.4g}}: %{{y:.2f}}% of values<extra></extra>",
            )
        )
        label = "" if len(pairs) == 1 else f"{name}: "
        extra = f", {dead} dead channel(s)" if dead else ""
        notes.append(f"{label}{zeros:.1%} exact zeros{extra}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
            raise TypeError(f"threshold must be a number >= 0, got {threshold!r}")
        t = float(threshold)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        # no negative side to shade when no value is negative (after a ReLU)
        lowest = min(float(layer.edges[0]) for _, layer, _ in pairs)
        low = -t if lowest < 0 else min(lowest, t)
        if t > 0:
            lines = dict.fromkeys((low if low == -t else t, t))
            fig.update_layout(shapes=[_vband(low, t), *(_vline(x) for x in lines)])
            notes.append(f"shaded: values between -{t:.3g} and {t:.3g}, zeroed by the threshold")
        else:
            notes.append("threshold 0: no value is zeroed")
    first = pairs[0][1]
    where = f"channel {channel}" if channel is not None else f"{first.channels} channels"
    fig.update_layout(
        title=_title(f"Activations of {first.layer} ({where})", notes),
        barmode="overlay",
        bargap=0,
        showlegend=len(pairs) > 1,
    )
    fig.update_xaxes(title_text="activation value")
    fig.update_yaxes(title_text="% of values" + (" (log scale)" if log_y else ""))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def channel_apoz(
    stats: object, after: object | None = None, *, names: tuple[str, str] = _STATS_NAMES
) -> go.Figure:
    """APoZ (average percentage of zeros) of each channel, dead channels in red.

    A channel that is zero for every input seen is *dead*: it can be pruned without changing
    the outputs. With ``after`` the two sets are drawn side by side per channel.

    Returns:
        A Figure with one Bar trace per set of statistics ("activations" or ``names``).

    >>> import torch
    >>> from prunelab.activations import activation_stats
    >>> stats = activation_stats(torch.nn.Sequential(torch.nn.ReLU()), -torch.rand(4, 2))["0"]
    >>> fig = channel_apoz(stats)
    >>> fig.data[0].y.tolist(), "2 dead" in fig.layout.title.text
    ([100.0, 100.0], True)
    """
    pairs = _pairs(stats, after, names)
    fig = go.Figure()
    notes = []
    for name, layer, colour in pairs:
        apoz = _to_numpy(layer.zero_fraction, what="zero_fraction").astype(np.float64) * 100
        dead = _to_numpy(layer.dead, what="dead")
        fig.add_trace(
            go.Bar(
                x=np.arange(apoz.size),
                y=apoz,
                name=name,
                marker={"color": [_EMPTY if d else colour for d in dead]},
                hovertemplate=f"{name}<br>channel %{{x}}: %{{y:.1f}}% zeros<extra></extra>",
            )
        )
        label = "" if len(pairs) == 1 else f"{name}: "
        notes.append(f"{label}mean APoZ {layer.sparsity:.1%}, {int(dead.sum())} dead")
    first = pairs[0][1]
    fig.update_layout(
        title=_title(f"Zeros per channel of {first.layer}", notes),
        barmode="group",
        bargap=0.15,
        showlegend=len(pairs) > 1,
    )
    fig.update_xaxes(title_text="channel")
    fig.update_yaxes(title_text="% of values exactly zero (APoZ)", range=[0, 100])
    return fig


def channel_ranges(
    stats: object,
    after: object | None = None,
    *,
    max_channels: int = 64,
    names: tuple[str, str] = _STATS_NAMES,
) -> go.Figure:
    """One box per channel: quartiles and median from the histogram, whiskers at min and max.

    Streaming statistics keep no raw values, so the boxes are drawn from precomputed numbers:
    quartiles and median from :meth:`LayerStats.quantiles` (within about one bin width of the
    exact ones; exact zeros sit at 0), whiskers at the exact min and max, a dashed mean line.
    Layers with more than ``max_channels`` channels show the first ``max_channels``.

    Returns:
        A Figure with one Box trace per set of statistics ("activations" or ``names``).

    >>> import torch
    >>> from prunelab.activations import activation_stats
    >>> net = torch.nn.Sequential(torch.nn.Identity())
    >>> stats = activation_stats(net, torch.randn(80, 3), layers="0")
    >>> fig = channel_ranges(stats["0"])
    >>> len(fig.data[0].x), fig.data[0].type
    (3, 'box')
    """
    pairs = _pairs(stats, after, names)
    max_channels = _check_count(max_channels, what="max_channels")
    fig = go.Figure()
    first = pairs[0][1]
    shown = min(first.channels, max_channels)
    for name, layer, colour in pairs:
        q = _to_numpy(layer.quantiles([0.25, 0.5, 0.75])[:shown], what="quantiles")
        fig.add_trace(
            go.Box(
                x=np.arange(shown),
                q1=q[:, 0],
                median=q[:, 1],
                q3=q[:, 2],
                lowerfence=_to_numpy(layer.min[:shown], what="min"),
                upperfence=_to_numpy(layer.max[:shown], what="max"),
                mean=_to_numpy(layer.mean[:shown], what="mean"),
                name=name,
                marker_color=colour,
                boxmean=True,
            )
        )
    notes = [
        "box: quartiles (from the histogram), whiskers: min and max, dashed: mean",
        f"first {shown} of {first.channels} channels" if shown < first.channels else None,
    ]
    fig.update_layout(
        title=_title(f"Activation range per channel of {first.layer}", notes),
        boxmode="group",
        showlegend=len(pairs) > 1,
    )
    fig.update_xaxes(title_text="channel")
    fig.update_yaxes(title_text="activation value")
    return fig


def activation_mask(
    mask: torch.Tensor | np.ndarray | Sequence[torch.Tensor],
    *,
    features: Sequence[int] | None = None,
    title: str | None = None,
    max_cells: int = 250_000,
) -> go.Figure:
    """The mask an activation sparsifier computed for a layer's input: kept blue, zeroed black.

    Laid out like :func:`mask_pattern`: rows are dim 0 of the mask (channels of a conv input,
    one row for a Linear input), columns the other dims flattened. A per-feature mask (a list
    with one mask per feature) shows one row block per feature, labelled with ``features``.
    Masks with values other than 0 and 1 are drawn on a continuous scale.

    Returns:
        A Figure with one Heatmap named "mask".

    >>> fig = activation_mask([torch.tensor([[True, False]]), torch.tensor([[False, False]])],
    ...                       features=[3, 7])
    >>> fig.data[0].z.tolist(), list(fig.layout.yaxis.ticktext)
    ([[1.0, 0.0], [0.0, 0.0]], ['feature 3', 'feature 7'])
    """
    if isinstance(mask, (list, tuple)):
        if not mask:
            raise ValueError("mask is an empty list; there is nothing to plot")
        parts = [_checked(m, what=f"mask[{i}]") for i, m in enumerate(mask)]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"per-feature masks must share one shape, got {sorted(shapes)}")
        if features is not None and len(features) != len(parts):
            raise ValueError(f"{len(features)} feature labels for {len(parts)} masks")
        array = np.concatenate([p.astype(np.float64).reshape(1, -1) for p in parts])
        labels = [f"feature {f}" for f in (features if features is not None else range(len(parts)))]
        titles = ("position in the feature", "feature")
        shape = f"{len(parts)} features x {_shape_text(parts[0].shape)}"
    else:
        checked = _checked(mask, what="mask")
        array = _matrix(checked.astype(np.float64))
        labels = None
        titles = _matrix_titles(checked.shape)
        shape = _shape_text(checked.shape)
    max_cells = _check_count(max_cells, what="max_cells")
    binary = bool(np.isin(array, (0.0, 1.0)).all())
    z, block = _pool(array, max_cells)
    if binary and block == (1, 1):
        style = _two_colour_style("zeroed")
    else:
        what = "fraction kept" if binary else "mask value"
        style = {
            "colorscale": [[0, _PRUNED], [1, _KEPT]],
            "colorbar": {"title": {"text": what}},
            "value": what + " %{z:.3g}",
        }
    notes = [
        f"{array.mean():.1%} of the positions kept" if binary else "a soft mask (values scale)",
        _pool_note(block, "the mean of"),
    ]
    fig = go.Figure(_heatmap(z, block, titles, name="mask", **style))
    fig.update_layout(title=_title(title or f"Activation mask {shape}", notes))
    _matrix_heatmap_axes(fig, titles)
    if labels is not None and block[0] == 1 and len(labels) <= 64:
        fig.update_yaxes(tickvals=list(range(len(labels))), ticktext=labels)
    return fig


# ----------------------------------------------------------------------------------------
# Training (histories and schedules from prunelab.training)


def _histories(history: object) -> dict[str, object]:
    import pandas as pd

    named = history if isinstance(history, Mapping) else {"": history}
    if not named:
        raise ValueError("history is empty; give a DataFrame or {name: DataFrame}")
    for frame in named.values():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"history must be a DataFrame (or a mapping of them), got {type(frame).__name__}"
            )
        _frame(frame, ("step", "loss", "accuracy"))
    return dict(named)


_RUN_COLOURS = (_KEPT, "#f28e2b", "#59a14f", "#9467bd", "#e15759", "#76b7b2")


def training_curves(history: object, *, title: str | None = None) -> go.Figure:
    """Loss (top) and accuracy (bottom) per optimizer step of one or more training runs.

    Each run has one colour in both panels. Batch values are drawn as lines; ``eval_accuracy``
    and ``eval_loss`` (measured on held-out data after each epoch) as diamonds; the sparsity
    in force as a dotted line on the accuracy panel, when it changes during the run. The
    legend has one entry per kind of mark and run (grouped under the run's name), and says
    only what is drawn: a run without held-out data has no diamond entry.

    Args:
        history: A history from :func:`prunelab.training.finetune` (columns step, loss,
            accuracy and optionally sparsity, eval_accuracy, eval_loss), or ``{name: history}``
            to compare runs.
        title: Main title.

    >>> import pandas as pd
    >>> h = pd.DataFrame({"step": [0, 1], "loss": [2.0, 1.0], "accuracy": [0.2, 0.6],
    ...                   "sparsity": [0.5, 0.9]})
    >>> [(t.name, t.showlegend is not False) for t in training_curves(h).data]
    [('batch values', True), ('batch values', False), ('sparsity', True)]
    """
    named = _histories(history)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("loss", "accuracy (%)"),
    )
    held_out = False
    for index, (name, frame) in enumerate(named.items()):
        colour = _RUN_COLOURS[index % len(_RUN_COLOURS)]
        run = f"{name}: " if name else ""
        group = {"legendgroup": name or "run", "legendgrouptitle_text": name or None}
        steps = frame["step"].tolist()
        for row, column, scale in ((1, "loss", 1), (2, "accuracy", 100)):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=(frame[column] * scale).tolist(),
                    mode="lines",
                    line={"color": colour},
                    name="batch values",
                    showlegend=row == 1,
                    hovertemplate=f"{run}batch {column}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
                    **group,
                ),
                row=row,
                col=1,
            )
        legend_entry = True  # one "held-out" entry per run, for both panels
        for column in ("eval_loss", "eval_accuracy"):
            if column not in frame:
                continue
            measured = frame.dropna(subset=[column])
            if measured.empty:
                continue
            row, scale = (1, 1) if column == "eval_loss" else (2, 100)
            fig.add_trace(
                go.Scatter(
                    x=measured["step"].tolist(),
                    y=(measured[column] * scale).tolist(),
                    mode="markers",
                    marker={"size": 9, "symbol": "diamond", "color": colour},
                    name="held-out data (each epoch)",
                    showlegend=legend_entry,
                    hovertemplate=f"{run}held-out {column.removeprefix('eval_')}<br>"
                    "step %{x}: %{y:.4g}<extra></extra>",
                    **group,
                ),
                row=row,
                col=1,
            )
            held_out, legend_entry = True, False
        if "sparsity" in frame and frame["sparsity"].nunique() > 1:
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=(frame["sparsity"] * 100).tolist(),
                    mode="lines",
                    line={"dash": "dot", "color": colour},
                    name="sparsity",
                    hovertemplate=f"{run}sparsity<br>step %{{x}}: %{{y:.1f}}%<extra></extra>",
                    **group,
                ),
                row=2,
                col=1,
            )
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="%", range=[0, 100], row=2, col=1)
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    notes = ["lines: each training batch", "diamonds: held-out data" if held_out else None]
    fig.update_layout(title=_title(title or "Training", notes), height=520)
    return fig


def schedule_plot(schedule: object, *, steps: int, title: str | None = None) -> go.Figure:
    """Sparsity vs optimizer step of one schedule, or of several to compare.

    Args:
        schedule: An object with ``sparsity_at(step)`` (:class:`prunelab.training.Gradual`,
            ``Iterative``, ``OneShot``, ``DynamicSparse``), or ``{name: schedule}``.
        steps: Plot steps 0 to ``steps``.
        title: Main title.

    >>> from prunelab.training import Gradual
    >>> fig = schedule_plot(Gradual(0.0, 0.9, start=0, end=10), steps=20)
    >>> fig.data[0].y[0], fig.data[0].y[-1]
    (0.0, 90.0)
    """
    count = _check_count(steps, what="steps")
    named = schedule if isinstance(schedule, Mapping) else {"": schedule}
    fig = go.Figure()
    for name, item in named.items():
        if not callable(getattr(item, "sparsity_at", None)):
            raise TypeError(
                "schedule must have a sparsity_at(step) method (a prunelab.training schedule), "
                f"got {type(item).__name__}"
            )
        label = name or (item.label() if callable(getattr(item, "label", None)) else "schedule")
        xs = list(range(count + 1))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[round(item.sparsity_at(s) * 100, 6) for s in xs],
                mode="lines",
                line={"shape": "hv"},
                name=label,
                hovertemplate=f"{label}<br>step %{{x}}<br>sparsity %{{y:.1f}}%<extra></extra>",
            )
        )
    fig.update_layout(title=_title(title or "Sparsity schedule", []), showlegend=True)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="sparsity (% of weights zeroed)", range=[0, 100])
    return fig


def compare_bars(
    results: Mapping[str, float],
    *,
    dense: float | None = None,
    metric: str = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """One bar per method (one-shot, fine-tuned, gradual, ...), the dense value as a line.

    Args:
        results: ``{label: value}`` in the order to show; accuracy values in [0, 1].
        dense: The dense model's value, drawn as a dashed reference line.
        metric: What the values are (``accuracy`` and ``agreement`` are shown in %).
        title: Main title.

    >>> fig = compare_bars({"one-shot": 0.7, "fine-tuned": 0.97}, dense=0.98)
    >>> list(fig.data[0].x), [round(v, 1) for v in fig.data[0].y]
    (['one-shot', 'fine-tuned'], [70.0, 97.0])
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {label: value}")
    percent = metric in ("accuracy", "agreement")
    scale = 100 if percent else 1
    labels = [str(k) for k in results]
    values = [float(v) * scale for v in results.values()]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=values,
            marker_color=_KEPT,
            text=[f"{v:.1f}%" if percent else f"{v:.3g}" for v in values],
            textposition="outside",
            name=metric,
            hovertemplate="%{x}<br>" + metric + " %{y:.3g}<extra></extra>",
        )
    )
    notes = []
    if dense is not None:
        fig.add_hline(
            y=float(dense) * scale,
            line_dash="dash",
            line_color=_EMPTY,
            annotation_text=f"dense {float(dense) * scale:.1f}{'%' if percent else ''}",
            annotation_position="top left",
        )
        notes.append("dashed: the dense model")
    label = _METRIC_TITLES.get(metric, metric)
    fig.update_layout(title=_title(title or f"{label.capitalize()} by method", notes))
    fig.update_yaxes(
        title_text=label + (" (%)" if percent else ""), range=[0, 105] if percent else None
    )
    return fig


def size_bars(sizes: Mapping[str, float], *, title: str | None = None) -> go.Figure:
    """Bytes of one model stored in different ways, as bars with the ratio to the first.

    Args:
        sizes: ``{label: bytes}``, the reference (usually ``"dense"``) first, e.g. built from
            :func:`prunelab.storage.compression` plus the shrunk model's bytes.
        title: Main title.

    Returns:
        A Figure with one Bar trace "bytes" (in KB); each bar's text is its ratio to the first.

    Raises:
        ValueError: No sizes, or a size that is not a positive number.

    >>> fig = size_bars({"dense": 4000, "bitmask": 525})
    >>> list(fig.data[0].text)
    ['1.00x', '7.62x smaller']
    """
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError("sizes must be a non-empty mapping of label -> bytes")
    labels = [str(k) for k in sizes]
    values = [float(v) for v in sizes.values()]
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"sizes must be positive numbers of bytes, got {dict(sizes)}")
    reference = values[0]
    text = ["1.00x"] + [
        f"{reference / v:.2f}x smaller" if v < reference else f"{v / reference:.2f}x larger"
        for v in values[1:]
    ]
    colours = [_REFERENCE] + [_KEPT if v < reference else _EMPTY for v in values[1:]]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[v / 1024 for v in values],
            text=text,
            textposition="outside",
            marker_color=colours,
            name="bytes",
            customdata=values,
            hovertemplate="%{x}<br>%{customdata:,.0f} bytes<extra></extra>",
        )
    )
    fig.update_layout(
        title=_title(title or "Model size by storage format", [f"ratios vs {labels[0]}"])
    )
    fig.update_yaxes(title_text="size (KB)", rangemode="tozero")
    return fig


def speed_bars(report: object, *, title: str | None = None) -> go.Figure:
    """Measured latency relative to dense, per variant and batch size, from a speed report.

    Args:
        report: The DataFrame of :func:`prunelab.speed.speed_report` (variant, batch,
            median_ms, ratio_vs_dense).
        title: Main title.

    Returns:
        A Figure with one Bar trace per variant (x: batch size, y: time / dense time) and a
        dashed line at 1 (as fast as dense; below is faster).

    >>> import pandas as pd
    >>> table = pd.DataFrame({"variant": ["dense", "shrunk"], "batch": [1, 1],
    ...                       "median_ms": [2.0, 1.0], "ratio_vs_dense": [1.0, 0.5]})
    >>> [(t.name, list(t.y)) for t in speed_bars(table).data]
    [('dense', [1.0]), ('shrunk', [0.5])]
    """
    table = _frame(report, ["variant", "batch", "median_ms", "ratio_vs_dense"])
    palette = {"dense": _REFERENCE, "masked": "#f28e2b", "shrunk": _KEPT}
    fig = go.Figure()
    for variant in table["variant"].unique():
        rows = table[table["variant"] == variant]
        fig.add_trace(
            go.Bar(
                x=[f"batch {b}" for b in rows["batch"]],
                y=rows["ratio_vs_dense"].astype(float).tolist(),
                name=str(variant),
                marker_color=palette.get(str(variant)),
                customdata=rows["median_ms"].astype(float).to_numpy(),
                text=[f"{r:.2f}x" for r in rows["ratio_vs_dense"]],
                textposition="outside",
                hovertemplate=(
                    f"{variant}<br>%{{x}}<br>%{{customdata:.3f}} ms "
                    "(%{y:.2f}x dense)<extra></extra>"
                ),
            )
        )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="as fast as dense")
    fig.update_layout(
        title=_title(title or "Measured latency vs dense", ["median time; below 1 is faster"]),
        barmode="group",
    )
    fig.update_yaxes(title_text="time / dense time", rangemode="tozero")
    return fig
