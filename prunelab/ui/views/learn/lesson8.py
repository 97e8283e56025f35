"""Lesson 8 of the Learn page: why zeros alone are not faster, and what is."""

from __future__ import annotations

import streamlit as st

from ....figures.fmt import count
from ....teach import speed as lesson
from ... import cache
from . import lesson_columns

__all__ = ["TITLE", "render"]

TITLE = "8. Zeros alone are not faster: what is"

ROUND = "learn8_round"  # this session's measurement round: "Measure again" starts a new one


def render() -> None:
    """A slider for the channels removed; bytes of each form and measured times beside it."""
    bundle = cache.load_model(lesson.SAMPLE_MODEL).bundle
    paragraph = (
        "A pruned weight is still stored and still multiplied, just by zero: *dense "
        "kernels* (the ordinary matrix routines) do the same work whatever the values, so "
        "the masked model is as big and as slow as the dense one. Three things do gain. "
        "Removing whole output *channels* leaves a smaller dense model with fewer *FLOPs* "
        "(multiplies and adds per input): smaller and faster. *Sparse formats* store only "
        "the kept weights and where they are (bitmask: one bit per weight; CSR, COO: an "
        "index per kept weight): smaller files, not faster ones, and at low sparsity the "
        "indices cost more than the zeros save. *2:4* sparsity (2 of every 4 weights kept) "
        "runs faster only on GPUs with sparse tensor cores. Times are medians of "
        "interleaved rounds; a difference counts only outside the measured spread."
    )
    controls, figure = lesson_columns(paragraph)
    with controls:
        sparsity = st.slider(
            "Channels removed (share of each layer's outputs)",
            0.0,
            0.9,
            0.5,
            0.05,
            key="learn8_sparsity",
        )
        if st.button("Measure again", key="learn8_measure"):
            st.session_state[ROUND] = st.session_state.get(ROUND, 0) + 1
        seen = cache.lesson_result(
            ("learn8", lesson.SAMPLE_MODEL, sparsity, st.session_state.get(ROUND, 0)),
            _build=lambda: lesson.measure(
                bundle.model, sparsity=sparsity, example_input=bundle.example_input()
            ),
        )
        params = seen.parameters()
        if "shrunk" in params:
            st.metric(
                "Parameters left after removal",
                count(params["shrunk"]),
                f"{params['shrunk'] / params['dense'] - 1:.0%}",
                delta_color="inverse",
                help=f"Of {count(params['dense'])} in the dense model.",
            )
    with figure:
        sizes, times = st.columns(2)
        with sizes:
            chart = lesson.size_figure(seen.sizes)
            st.plotly_chart(chart.update_layout(height=400), key="learn8_sizes")
        with times:
            chart = lesson.speed_figure(seen.report)
            st.plotly_chart(chart.update_layout(height=400), key="learn8_times")
        st.caption("  \n".join(seen.verdicts()))
        st.info(lesson.two_four_note(seen.device))
