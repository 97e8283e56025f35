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

from ..analysis.flops import with_masks
from ..core.masks import Masks
from ..runtime.memory import format_count

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


_HELP = {
    "sparsity": "Fraction of the pruned layers' weights that are zeroed.",
    "nonzero": "Weights kept in the pruned layers, and how many fewer than dense.",
    "flops": "Multiply-adds of one forward pass through the pruned layers that meet a kept "
    "weight: what sparse kernels could save, not what dense ones do.",
    "agreement": "Share of inputs where the pruned model predicts the dense model's class.",
    "kl": "KL divergence of the pruned model's output distribution from the dense one's.",
}


def _count(n: int) -> str:
    return f"{n:,}" if n < 1_000_000 else format_count(n)


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
    kept = sum(masks.kept_counts().values())
    total = sum(masks[fqn].numel() for fqn in masks)
    cards = [
        Card("Sparsity", f"{masks.sparsity():.1%}", help=_HELP["sparsity"]),
        Card("Nonzero weights", _count(kept), f"{kept - total:+,}", help=_HELP["nonzero"]),
    ]
    if flops is not None:
        scaled = with_masks(flops, masks)
        before, after = int(scaled["flops"].sum()), int(scaled["effective_flops"].sum())
        change = f"{(after - before) / max(before, 1):+.1%}"
        cards.append(Card("Effective FLOPs", _count(after), change, help=_HELP["flops"]))
    if dense is None:
        cards.append(Card("Accuracy", "no data", "explore(model, data) measures it"))
        return cards
    if "accuracy" in metrics:
        drop = metrics["accuracy"] - dense["accuracy"]
        tone = "bad" if drop < 0 else "good"
        text = f"{drop * 100:+.2f} points"
        help_ = f"Dense: {dense['accuracy']:.2%}"
        cards.append(Card("Accuracy", f"{metrics['accuracy']:.2%}", text, tone, help_))
    cards.append(Card("Agreement", f"{metrics['agreement']:.2%}", help=_HELP["agreement"]))
    cards.append(Card("KL divergence", f"{metrics['kl']:.4f}", help=_HELP["kl"]))
    if "loss" in metrics:
        rise = metrics["loss"] - dense["loss"]
        tone = "bad" if rise > 0 else "good"
        cards.append(Card("Loss", f"{metrics['loss']:.3f}", f"{rise:+.3f}", tone))
    return cards
