"""Lesson 4: which weights matter: magnitude, random, gradient and activation criteria."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ....teach import criteria as teach
from ....teach import masks as teach_masks
from ... import cache
from . import chosen, curves_allowed, lesson_columns, numbers_at, sparsity_slider

__all__ = ["TITLE", "render"]

TITLE = "4. Which weights matter: magnitude, random, gradient, activation"
HEIGHT = 420  # px
DEFAULT = ["magnitude", "random"]
NEEDS_DATA = {"gradient", "activation"}

PARAGRAPH = (
    "A **criterion** gives each weight a score; the lowest scores are pruned, the same share "
    "in every layer. **Magnitude** scores |w|, the weight's size. **Random** scores nothing: "
    "it is the baseline any criterion must beat. **Gradient** scores |w x gradient|, an "
    "estimate of how much the loss (the model's error) grows if the weight goes. "
    "**Activation** scores |w| x the typical size of the input that weight multiplies. The "
    "last two are *data-driven*: they need **calibration**, a few batches of data run "
    "through the model. No criterion wins everywhere: on a well-trained model the gradients "
    "are near zero and noisy, so pick the criteria and see which holds up longest."
)


def _curve(choice, criterion: str) -> pd.DataFrame:
    """One criterion's curve, computed once per model and data (the others are kept apart,
    so picking one more criterion computes only its curve)."""

    def build() -> pd.DataFrame:
        calibration = None
        if criterion in NEEDS_DATA:
            calibration = cache.calibration(choice.model_key, choice.data_spec, _choice=choice)
        return teach.criterion_curves(
            choice.model, choice.data, [criterion], calibration=calibration
        )

    return cache.lesson_result(
        ("learn4-curve", choice.model_key, choice.data_spec, criterion), _build=build
    )


def render() -> None:
    """The picked criteria's curves with the student's sparsity marked, and their numbers."""
    choice = chosen()
    controls, figure = lesson_columns(PARAGRAPH)
    with controls:
        st.markdown("Criteria to compare")
        # one checkbox each: all four names stay readable in a narrow column
        picked = [
            name
            for name in teach.CRITERIA
            if st.checkbox(name, value=name in DEFAULT, key=f"learn4_{name}")
        ]
        sparsity = sparsity_slider("learn4_sparsity", "Sparsity to look at")
        numbers = st.container()
    with figure:
        if choice.data is None:
            st.info("Pick evaluation data in the sidebar to compare the criteria.")
            return
        if not picked:
            st.info("Pick at least one criterion on the left.")
            return
        evaluations = len(picked) * len(teach_masks.LEVELS)
        if not curves_allowed(choice, key="learn4_compute", evaluations=evaluations):
            return
        table = pd.concat([_curve(choice, c) for c in picked], ignore_index=True)
        chart, metric = teach_masks.marked_curves(
            table, sparsity, title=f"{choice.bundle.name}, pruned without retraining"
        )
        st.plotly_chart(chart.update_layout(height=HEIGHT), key="learn4_curves")
    numbers_at(numbers, table, metric, sparsity)  # under the slider
