"""Figures changed in place, and metric cards, for the notebook widget.

A ``plotly.graph_objects.FigureWidget`` sends only what changes to the browser when its traces
are updated; building a new widget would re-send everything and lose the reader's zoom. The
figures themselves come from :mod:`prunelab.figures`, as on the app's pages.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.flops import mask_summary
from ..core.masks import Masks
from ..figures.fmt import HELP, count, percent, points

__all__ = ["Card", "cards_html", "metric_cards", "note", "refresh"]


def _signature(data: Sequence) -> list[tuple[str, tuple[str, ...]]]:
    # uid is the widget's own bookkeeping; every other property must match to update in place
    return [
        (trace.type, tuple(sorted(k for k in trace.to_plotly_json() if k != "uid")))
        for trace in data
    ]


def _json_safe(value: object) -> object:
    """``value`` with NaN and inf in grids written as None (JSON null).

    A FigureWidget sends 1-D arrays as binary buffers, but grids (a heatmap's z) as JSON, where
    NaN is not allowed: the browser would drop the message. Plotly draws null as a gap, as NaN.
    """
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim > 1 and value.dtype.kind == "f":
        finite = np.isfinite(value)
        if not finite.all():
            return np.where(finite, value, None).tolist()
    return value


def _trace_json(trace: object) -> dict:
    return _json_safe(trace.to_plotly_json())


def refresh(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Make ``widget`` show ``figure``, in place where the traces line up.

    Traces of the same kinds with the same properties are updated (only their values travel);
    otherwise (another number of traces, e.g. an "empty layers" bar appearing) they are
    replaced. The layout is replaced in both cases; ``uirevision`` in it keeps the zoom.
    """
    if _signature(widget.data) == _signature(figure.data):
        with widget.batch_update():
            for old, new in zip(widget.data, figure.data, strict=True):
                old.update(_trace_json(new), overwrite=True)
            widget.layout = figure.layout
        return
    widget.data = ()
    widget.add_traces([_trace_json(trace) for trace in figure.data])
    widget.layout = figure.layout


@dataclass(frozen=True)
class Card:
    """One number: a label, its value and its change against the dense model.

    Attributes:
        label: What it is ("Accuracy").
        value: The value, formatted.
        change: The change, formatted ("-1.2 pt"), or "".
        tone: ``"good"``, ``"bad"`` or ``"plain"``: how the change is coloured.
        help: A sentence shown on hover.
    """

    label: str
    value: str
    change: str = ""
    tone: str = "plain"
    help: str = ""


def note(text: str, *, colour: str = "#57606a") -> str:
    """A short paragraph of HTML (``text`` is HTML) in the small grey type of captions."""
    return f'<div style="font-size:12px;line-height:1.35;color:{colour}">{text}</div>'


_TONES = {"good": "#1a7f37", "bad": "#cf222e", "plain": "#6e7781"}


def cards_html(cards: Sequence[Card]) -> str:
    """The cards as one HTML block, four to a row, each as tall as one with a change."""
    boxes = []
    for card in cards:
        change = html.escape(card.change) or "&nbsp;"
        boxes.append(
            f'<div class="prunelab-card" title="{html.escape(card.help)}" '
            'style="padding:4px 8px;border-left:3px solid #d0d7de;min-width:0">'
            f'<div style="font-size:12px;color:#57606a">{html.escape(card.label)}</div>'
            f'<div class="prunelab-value" style="font-size:22px;line-height:1.2">'
            f"{html.escape(card.value)}</div>"
            f'<div style="font-size:12px;color:{_TONES.get(card.tone, _TONES["plain"])}">'
            f"{change}</div></div>"
        )
    return (
        '<div class="prunelab-cards" style="display:grid;width:100%;'
        'grid-template-columns:repeat(4,minmax(110px,1fr));gap:6px 10px">'
        + "".join(boxes)
        + "</div>"
    )


def metric_cards(
    masks: Masks,
    *,
    metrics: Mapping[str, float],
    dense: Mapping[str, float] | None,
    flops: pd.DataFrame | None,
) -> list[Card]:
    """The Prune page's numbers for ``masks``, with their changes against the dense model.

    Args:
        masks: The masks.
        metrics: :func:`prunelab.evaluate` of the masked model (empty without data).
        dense: :func:`prunelab.evaluate` of the dense model, or None without data.
        flops: The dense FLOP table (:func:`prunelab.analysis.flops_by_layer`), or None.
    """
    counted = mask_summary(masks, flops)
    kept, total = counted.kept, counted.total
    cards = [
        Card("Sparsity", f"{counted.sparsity:.1%}"),
        Card(
            "Nonzero weights",
            count(kept),
            f"{kept - total:+,}",
            help=f"{kept:,} of {total:,} weights in the pruned layers are kept.",
        ),
    ]
    if flops is not None:
        cards.append(
            Card(
                "Effective FLOPs",
                count(counted.effective_flops),
                f"{counted.flops_change:+.1%}",
                help=HELP["FLOPs"] + " Counted over the pruned layers.",
            )
        )
    if dense is None:
        cards.append(Card("Accuracy", "no data", "explore(model, data) measures it"))
        return cards
    if "accuracy" in metrics:
        drop = metrics["accuracy"] - dense["accuracy"]
        tone = "bad" if drop < 0 else "good"
        help_ = f"Dense: {percent(dense['accuracy'])}"
        cards.append(Card("Accuracy", percent(metrics["accuracy"]), points(drop), tone, help_))
    cards.append(Card("Agreement", percent(metrics["agreement"]), help=HELP["agreement"]))
    cards.append(Card("KL divergence", f"{metrics['kl']:.4f}", help=HELP["KL"]))
    if "loss" in metrics:
        rise = metrics["loss"] - dense["loss"]
        tone = "bad" if rise > 0 else "good"
        cards.append(Card("Loss", f"{metrics['loss']:.3f}", f"{rise:+.3f}", tone))
    return cards
