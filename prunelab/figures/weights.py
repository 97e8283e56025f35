"""Weights and masks: heatmaps before and after, mask patterns, histograms with the cut-off,
channel magnitudes, sparsity per layer and the overlap of two strategies' masks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
import torch

from ..core.masks import Masks, check_masks
from ..runtime.checks import check_count, check_number
from ._style import (
    _EMPTY,
    _KEPT,
    _LAYOUTS,
    _LEFT,
    _OVERLAP,
    _PANEL_AXES,
    _PRUNED,
    _RIGHT,
    _as_mask,
    _checked,
    _filters,
    _heatmap,
    _matrix,
    _matrix_heatmap_axes,
    _matrix_titles,
    _panel_title,
    _pool,
    _pool_note,
    _shape_text,
    _sparsity_note,
    _stepped,
    _title,
    _two_colour_style,
    _vband,
    _vline,
)

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
    max_cells = check_count(max_cells, what="max_cells")
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
    max_cells = check_count(max_cells, what="max_cells")
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
    bins = check_count(bins, what="bins")
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
        t = check_number(threshold, what="threshold", minimum=0)
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
    max_cells = check_count(max_cells, what="max_cells")
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
