"""Lesson 2: unstructured, channel and N:M pruning at the same sparsity, where they can be."""

from __future__ import annotations

import streamlit as st

from .... import figures
from ....figures.fmt import metric_value
from ....teach import masks as teach_masks
from ....teach import patterns as teach
from ... import cache
from . import chosen, curves_allowed, lesson_columns, sparsity_slider

__all__ = ["TITLE", "render"]

TITLE = "2. Unstructured, channel and N:M at the same sparsity"
MASK_HEIGHT = 250  # px
CURVE_HEIGHT = 330

PARAGRAPH = (
    "The same sparsity can take very different shapes. **Unstructured** pruning may zero any "
    "single weight: it keeps exactly the most important ones, but leaves scattered holes that "
    "ordinary hardware cannot skip. **Channel** pruning removes whole **channels** (a channel "
    "is one output of a layer: a row here), so the layer becomes really smaller, but good "
    "weights go with bad ones and the sparsity moves in steps of one row. **N:M** keeps the N "
    "largest of every M neighbouring weights: a regular comb whose sparsity is always "
    "1 - N/M, so **2:4 is always 50%**, whatever the slider says; it is the one pattern "
    "recent NVIDIA GPUs run faster. Below, what each costs on the model at the same sparsity."
)


def _curves(choice, m: int) -> object:
    return cache.lesson_result(
        ("learn2-curves", choice.model_key, choice.data_spec, m),
        _build=lambda: teach.pattern_curves(choice.model, choice.data, m=m),
    )


def render() -> None:
    """Three masks of the toy layer at one sparsity, and the three patterns on the model."""
    choice = chosen()
    controls, figure = lesson_columns(PARAGRAPH)
    with controls:
        sparsity = sparsity_slider("learn2_sparsity", "Sparsity asked of every pattern")
        m = st.radio(
            "N:M group size M",
            teach.GROUP_SIZES,
            horizontal=True,
            key="learn2_group",
            help="N is then chosen to come nearest to the sparsity asked: with M = 4, the "
            "patterns are 3:4 (25%), 2:4 (50%) and 1:4 (75%).",
        )
    layer = cache.lesson_result(("learn-toy-layer",), _build=teach_masks.toy_layer)
    masks = teach.pattern_masks(layer, sparsity, m=m)  # one 16 x 32 layer: cheap
    reached = teach.pattern_table(layer[0].weight, masks, sparsity)
    with figure:
        for col, (name, mask), row in zip(
            st.columns(len(masks)), masks.items(), reached.itertuples(), strict=True
        ):
            pattern = figures.mask_pattern(mask, title=name)
            pattern.update_traces(showscale=False).update_layout(height=MASK_HEIGHT)
            # keyed by position: the N:M chart stays one chart when its N changes
            col.plotly_chart(pattern, key=f"learn2_mask{row.Index}")
            col.caption(
                f"{row.sparsity:.1%} zeroed, {row.magnitude_kept:.0%} of the layer's |w| kept"
                + (f". {row.why[0].upper()}{row.why[1:]}." if row.why else "")
            )
        if choice.data is None:
            st.info("Pick evaluation data in the sidebar to compare what the patterns cost.")
            return
        if not curves_allowed(
            choice, key="learn2_compute", evaluations=2 * len(teach_masks.LEVELS) + m - 1
        ):
            return
        table = _curves(choice, m)
        chart, metric = teach_masks.marked_curves(
            table, sparsity, title=f"{choice.bundle.name}: each pattern at each sparsity"
        )
        st.plotly_chart(chart.update_layout(height=CURVE_HEIGHT), key="learn2_curves")
        nm = table[table["strategy"] == f"N:{m}"]
        nearest = nm.loc[(nm["requested"] - sparsity).abs().idxmin()]
        st.caption(
            f"The N:{m} points are the only sparsities N:{m} can have; the one nearest to "
            f"{sparsity:.0%} is {nearest['requested']:.0%} "
            f"({metric} {metric_value(metric, nearest[metric])}). Channel pruning stops short: "
            "the last layer keeps all its channels, since each one is a class."
        )
