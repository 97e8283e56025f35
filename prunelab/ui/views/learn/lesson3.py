"""Lesson 3: layerwise against global pruning at the same overall sparsity."""

from __future__ import annotations

import streamlit as st

from ....core.pruner import chosen_layers
from ....core.strategies import get_strategy
from ....teach import masks as teach_masks
from ....teach import scope as teach
from ... import cache
from . import chosen, curves_allowed, lesson_columns, numbers_at, sparsity_slider

__all__ = ["TITLE", "render"]

TITLE = "3. Layerwise or global"
CURVE_HEIGHT = 320  # px

PARAGRAPH = (
    "Both prune the same share of the whole model, by **magnitude** (the smallest |w| go). "
    "**Layerwise** pruning takes that share from every layer alike. **Global** pruning ranks "
    "all the model's weights together and cuts once, so each layer loses what falls below "
    "one common threshold: layers with many small weights (often the big ones) lose more, "
    "and small layers whose every weight matters, such as the first, are spared. The bars "
    "show each layer's sparsity both ways; the curves, what each way costs at every "
    "sparsity, with yours marked."
)


def render() -> None:
    """Per-layer sparsity of both scopes at one sparsity, and both scopes' curves."""
    choice = chosen()
    controls, figure = lesson_columns(PARAGRAPH)
    with controls:
        sparsity = sparsity_slider("learn3_sparsity", "Sparsity of the whole model")
    with figure:
        bars = st.columns(len(teach.SCOPES))
        for col, (name, strategy) in zip(bars, teach.SCOPES.items(), strict=True):
            # prepared once per model (scores sorted): a slider move is a lookup
            layers, _ = chosen_layers(choice.model, get_strategy(strategy), None)
            pruner = cache.pruner(
                choice.model_key,
                choice.data_spec,
                strategy,
                (),
                tuple(t.fqn for t in layers),
                0,
                _choice=choice,
            )
            masks = pruner.masks(sparsity=sparsity)
            # a kept figure, shared: drawn as it is (its height follows the layer count)
            chart = cache.layer_sparsity_figure(choice.model_key, masks, title=name)
            col.plotly_chart(chart, key=f"learn3_{name}")
        if choice.data is None:
            st.info("Pick evaluation data in the sidebar to see what each way costs.")
            return
        if not curves_allowed(
            choice, key="learn3_compute", evaluations=2 * len(teach_masks.LEVELS)
        ):
            return
        table = cache.lesson_result(
            ("learn3-curves", choice.model_key, choice.data_spec),
            _build=lambda: teach.scope_curves(choice.model, choice.data),
        )
        chart, metric = teach_masks.marked_curves(
            table, sparsity, title=f"{choice.bundle.name}: what each way costs"
        )
        st.plotly_chart(chart.update_layout(height=CURVE_HEIGHT), key="learn3_curves")
    numbers_at(controls, table, metric, sparsity)  # under the slider
