"""Lesson 7 of the Learn page: weight pruning vs activation pruning."""

from __future__ import annotations

import streamlit as st

from ....figures.fmt import percent, points
from ....teach import activations as lesson
from ... import cache
from . import lesson_columns

__all__ = ["TITLE", "render"]

TITLE = "7. Zeros in the weights, or zeros in what flows between layers"


def render() -> None:
    """Two sliders (weight sparsity, activation threshold); the weight mask beside the
    activations entering the same layer, and what both cost in accuracy."""
    bundle = cache.load_model(lesson.SAMPLE_MODEL).bundle
    test = cache.load_data(bundle.default_data)
    paragraph = (
        "*Weights* are the numbers a model learned; *activations* are the numbers that flow "
        "from one layer to the next while it runs on an input. Weight pruning zeros weights "
        "once, so every input meets the same zeros (left, black). Activation pruning zeros "
        "activations on the fly: one smaller than the *threshold* (in size) becomes 0, so "
        "each input gets its own zeros (right: one row per test image). *ReLU*, the "
        "function after each layer that turns negative values into 0, already makes many "
        "for free. A zero activation means the next layer could skip a whole column of its "
        "weights for that input, but only kernels that look for zeros as they run can "
        f"skip it. Here {bundle.name}, a three-layer network for 8x8 images of digits."
    )
    controls, figure = lesson_columns(paragraph)
    with controls:
        weight_sparsity = st.slider(
            "Weight sparsity (global magnitude)", 0.0, 0.95, 0.5, 0.05, key="learn7_weights"
        )
        threshold = st.slider(
            "Activation threshold (smaller values become 0)",
            0.0,
            1.5,
            0.3,
            0.05,
            key="learn7_threshold",
        )
        seen = cache.lesson_result(
            ("learn7", lesson.SAMPLE_MODEL, weight_sparsity, threshold),
            _build=lambda: lesson.weight_vs_activation(
                bundle.model, test, weight_sparsity=weight_sparsity, threshold=threshold
            ),
        )
        st.metric("Zeros in the weights", percent(seen.weight_sparsity))
        st.metric(
            "Zeros between layers",
            percent(seen.activation_sparsity),
            points(seen.activation_sparsity - seen.natural_sparsity) + " from the threshold",
            delta_color="off",
            help=f"ReLU alone makes {percent(seen.natural_sparsity)} of them.",
        )
        st.metric(
            "Test accuracy",
            percent(seen.accuracy),
            points(seen.accuracy - seen.dense_accuracy),
        )
    with figure:
        chart = lesson.contrast_figure(seen)
        st.plotly_chart(chart.update_layout(height=420), key="learn7_chart")
