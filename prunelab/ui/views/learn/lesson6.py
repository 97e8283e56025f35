"""Lesson 6 of the Learn page: recovery by fine-tuning (one-shot, fine-tuned, gradual)."""

from __future__ import annotations

import streamlit as st

from .... import figures
from ....analysis import evaluate
from ....figures.fmt import percent
from ....teach import recovery as lesson
from ... import cache
from . import lesson_columns

__all__ = ["TITLE", "render"]

TITLE = "6. Training wins back what pruning lost"

SPARSITIES = (0.8, 0.85, 0.9, 0.95, 0.98)
RAN = "learn6_ran"  # the settings this session has trained: shown again without the button


def render() -> None:
    """One-shot accuracy at once for the chosen sparsity; a button trains both ways (under a
    second on the MLP), kept for every session, then bars and training curves."""
    bundle = cache.load_model(lesson.SAMPLE_MODEL).bundle
    spec = bundle.default_data
    test = cache.load_data(spec)
    paragraph = (
        f"Pruning in one go removes weights the network was using, so accuracy falls "
        "(*one-shot*). *Fine-tuning* then trains the pruned network a little more, with "
        "the pruned weights held at zero, so the kept ones learn to do the missing work; "
        f"an *epoch* is one pass over the {len(cache.train_split(spec)):,} training "
        "images. *Gradual* pruning instead trains while it prunes a little more at each "
        "step, from dense to the target, so the network adapts as it goes. Both get the "
        f"same steps. Here {bundle.name}, a three-layer network for 8x8 images of digits."
    )
    controls, figure = lesson_columns(paragraph)
    with controls:
        sparsity = st.select_slider(
            "Sparsity (global magnitude)",
            SPARSITIES,
            value=0.95,
            format_func=lambda level: f"{level:.0%}",
            key="learn6_sparsity",
        )
        epochs = st.select_slider("Training epochs", [1, 2, 3, 4], value=2, key="learn6_epochs")
        key = ("learn6", lesson.SAMPLE_MODEL, sparsity, epochs)
        ran = st.session_state.setdefault(RAN, set())
        if st.button("Train both ways (a few seconds at most)", key="learn6_train"):
            ran.add(key)
    _, one_shot = cache.lesson_result(
        ("learn6-one-shot", lesson.SAMPLE_MODEL, sparsity),
        _build=lambda: lesson.one_shot(bundle.model, test, sparsity=sparsity),
    )
    with figure:
        bars, curves = st.columns(2)
        if key not in ran:
            with bars:
                dense = cache.lesson_result(
                    ("learn6-dense", lesson.SAMPLE_MODEL),
                    _build=lambda: evaluate(bundle.model, test, metrics=("accuracy",))["accuracy"],
                )
                chart = lesson.recovery_figure({"one-shot": one_shot}, dense=dense)
                st.plotly_chart(chart.update_layout(height=460), key="learn6_bars")
            curves.info(
                f"One-shot at {sparsity:.0%}: {percent(one_shot)}. Press **Train both ways** "
                "to fine-tune and to prune gradually, and compare."
            )
            return
        result = cache.lesson_result(
            key,
            _build=lambda: lesson.recover(
                bundle.model, cache.train_split(spec), test, sparsity=sparsity, epochs=epochs
            ),
        )
        with bars:
            chart = lesson.recovery_figure(result.accuracies(), dense=result.dense)
            st.plotly_chart(chart.update_layout(height=460), key="learn6_bars")
        with curves:
            history = figures.training_curves(result.histories, title="Training, step by step")
            st.plotly_chart(history.update_layout(height=460), key="learn6_curves")
        st.caption(
            f"{result.steps} training steps each. Dense {percent(result.dense)}; one-shot "
            f"{percent(result.one_shot)}; fine-tuned {percent(result.fine_tuned)}; gradual "
            f"{percent(result.gradual)}."
        )
