"""Activations (statistics from prunelab.activations): distributions, APoZ, ranges, masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..runtime.checks import check_count, check_number
from ._style import (
    _EMPTY,
    _KEPT,
    _PRUNED,
    _checked,
    _heatmap,
    _matrix,
    _matrix_heatmap_axes,
    _matrix_titles,
    _pool,
    _pool_note,
    _shape_text,
    _title,
    _to_numpy,
    _two_colour_style,
    _vband,
    _vline,
)

# ----------------------------------------------------------------------------------------
# Activations (statistics from prunelab.activations)

_AFTER = "#f28e2b"
_STATS_NAMES = ("before", "after")


def _layer_stats(value: object, *, what: str):
    from ..activations.results import LayerStats

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
        t = check_number(threshold, what="threshold", minimum=0)
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
    max_channels = check_count(max_channels, what="max_channels")
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
    max_cells = check_count(max_cells, what="max_cells")
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
