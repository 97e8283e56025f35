"""Lesson 5 of the Learn page: sensitivity differs per layer."""

from __future__ import annotations

import streamlit as st

from ....teach import sensitivity as lesson
from ... import cache
from . import lesson_columns

__all__ = ["TITLE", "render"]

TITLE = "5. Some layers break long before others"


def render() -> None:
    """The student picks a sparsity and a tolerance; the curves mark both, the left column
    names the layers that break there."""
    bundle = cache.load_model(lesson.SAMPLE_MODEL).bundle
    test = cache.load_data(bundle.default_data)
    table = cache.lesson_result(
        ("learn5", lesson.SAMPLE_MODEL, lesson.LEVELS),
        _build=lambda: lesson.layer_sensitivity(bundle.model, test),
    )
    layers = table["layer"].nunique()
    paragraph = (
        f"Layers do not matter equally. Here each of the {layers} *layers* (weight "
        f"tensors) of {bundle.name}, a small residual network for 8x8 images of digits, is "
        "pruned **alone** to the chosen sparsity (the share of its weights set to zero, "
        "smallest first) while the rest stays dense, and the test accuracy is measured. "
        "The loss, in *points* of accuracy (98% to 90% is 8 points), is that layer's "
        "*sensitivity*. Small layers that every signal passes through, such as the first "
        "convolution (stem) and the classifier (fc), break first; large layers full of "
        "redundant weights barely notice. Good recipes prune sensitive layers less: the "
        "Sensitivity page builds one."
    )
    controls, figure = lesson_columns(paragraph)
    with controls:
        sparsity = st.select_slider(
            "Sparsity of the one layer pruned",
            lesson.LEVELS,
            value=0.7,
            format_func=lambda level: f"{level:.0%}",
            key="learn5_sparsity",
        )
        tolerance = st.slider(
            "A layer breaks when accuracy drops by more than (points)",
            1,
            20,
            round(lesson.TOLERANCE * 100),
            key="learn5_tolerance",
        )
        rows = lesson.broken_layers(table, sparsity, tolerance=tolerance / 100)
        broken = rows[rows["broken"]]
        st.metric("Layers that break", f"{len(broken)} of {len(rows)}")
    with figure:
        chart = lesson.sensitivity_figure(table, sparsity, tolerance=tolerance / 100)
        st.plotly_chart(chart.update_layout(height=420), key="learn5_chart")
        if len(broken):
            names = ", ".join(
                f"{row.layer.removesuffix('.weight')} (-{row.drop * 100:.1f})"
                for row in broken.itertuples()
            )
            st.caption(f"At {sparsity:.0%}, these lose more than {tolerance} points: {names}.")
        else:
            st.caption(f"At {sparsity:.0%}, every layer alone keeps within {tolerance} points.")
