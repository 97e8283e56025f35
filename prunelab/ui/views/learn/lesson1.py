"""Lesson 1: what a mask is, and why prune at all (size, speed, energy) and what it costs."""

from __future__ import annotations

import streamlit as st

from .... import figures
from ....figures.fmt import metric_value, points
from ....teach import masks as teach
from ... import cache
from . import chosen, curves_allowed, lesson_columns, sparsity_slider

__all__ = ["TITLE", "render"]

TITLE = "1. What a mask is, and why prune at all"
HEIGHT = 360  # px: both figures beside the controls on a 1280x720 screen

PARAGRAPH = (
    "A layer of a network is a grid of **weights**, numbers it multiplies its inputs by. "
    "**Pruning** sets some of them to zero, and a **mask** says which: a grid of the same "
    "shape, *kept* or *pruned* for each weight. The **sparsity** is the share pruned. Here the "
    "smallest weights go (*magnitude* pruning; in the toy layer below, pruned weights are "
    "black). Why do it? A "
    "sparse model can be **stored** in fewer bytes (only the kept weights and their "
    "positions), it needs fewer **FLOPs** (floating-point multiplications and additions) when "
    "the hardware can skip zeros (lesson 8), and fewer bytes moved and operations done mean "
    "less **energy**. The cost is accuracy: beside the toy layer, the whole model pruned at "
    "each sparsity. It falls slowly, then fast: find where it bends."
)


def _gains(choice) -> object:
    """The model's gains table, computed once per model and data."""
    return cache.lesson_result(
        ("learn1-gains", choice.model_key, choice.data_spec),
        _build=lambda: teach.gains(
            choice.model, choice.data, example_input=choice.bundle.example_input()
        ),
    )


def render() -> None:
    """The toy layer's mask, and what pruning the chosen model buys and costs."""
    choice = chosen()
    controls, figure = lesson_columns(PARAGRAPH)
    with controls:
        sparsity = sparsity_slider("learn1_sparsity")
    layer = cache.lesson_result(("learn-toy-layer",), _build=teach.toy_layer)
    mask = teach.toy_mask(layer, sparsity)  # one 16 x 32 layer: nothing to cache
    with figure:
        toy, model = st.columns(2)
        heatmap = figures.weight_heatmap(
            layer[0].weight.detach(), mask, title="A toy layer: weights, then masked"
        )
        toy.plotly_chart(heatmap.update_layout(height=HEIGHT), key="learn1_mask")
        with model:
            if not curves_allowed(choice, key="learn1_compute", evaluations=len(teach.LEVELS)):
                return
            table = _gains(choice)
            st.plotly_chart(
                teach.gains_figure(table, marked=sparsity).update_layout(height=HEIGHT),
                key="learn1_gains",
            )
    row = table.loc[(table["requested"] - sparsity).abs().idxmin()]
    with controls:  # the numbers at the slider's sparsity, under the slider
        st.metric(
            "Stored size",
            f"{row['size']:.0%} of dense",
            f"{1 / row['size']:.1f}x smaller",
            delta_color="off",
            help="Each pruned layer in its smallest format: dense, CSR (the kept values with "
            "their column positions) or a bitmask (one bit per weight plus the kept values).",
        )
        st.metric(
            "Effective FLOPs",
            f"{row['flops']:.0%} of dense",
            help="The multiplications and additions that meet a kept weight: what a kernel "
            "that skips zeros could save. Ordinary dense kernels still do them all.",
        )
        if "agreement" in table:
            metric = teach.shown_metric(table)
            dense = table.loc[table["requested"] == 0, metric].iloc[0]
            st.metric(
                metric.capitalize(),
                metric_value(metric, row[metric]),
                points(row[metric] - dense),
                help=f"Of the whole {choice.bundle.name} pruned by magnitude to this "
                "sparsity (all layers ranked together), without any retraining.",
            )
        else:
            st.info("Pick evaluation data in the sidebar to see what pruning costs.")
