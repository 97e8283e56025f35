"""Prune: pick a strategy and layers, move a slider, see what happens."""

import streamlit as st

from prunelab import figures, list_strategies
from prunelab.figures.fmt import HELP, count, percent
from prunelab.ui import cache, quality
from prunelab.ui.errors import error_boundary, failing_as
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import prune as view
from prunelab.ui.views.heads import heads_section
from prunelab.ui.views.nexttoken import next_token_box
from prunelab.ui.widgets import explain

METRIC_HEIGHT = 96  # px: a metric with a change below it
HEIGHT = 400  # px: the figure fits beside the controls on a 1280x720 screen
VIEWS = {  # short labels: the picker fits on one line beside the controls
    "weights": "Weights",
    "mask": "Mask",
    "histogram": "Histogram",
    "channels": "Channels",
    "layers": "Per layer",
    "compare": "Compare",
}
CHART_KEYS = {
    "weights": "heatmap",
    "mask": "mask_pattern",
    "histogram": "histogram",
    "channels": "channels",
}
EXPLAIN = {
    "weights": "Left, the layer's weights; right, the same weights after pruning (pruned ones "
    "are black, off the weight scale). Blue is positive, red negative. Convolution weights "
    "are drawn as output channels by (input channels x kernel positions).",
    "mask": "The mask itself: kept weights blue, pruned ones black. Unstructured masks look "
    "like noise, channel masks like whole rows, N:M masks like a regular comb along the "
    "inputs.",
}

st.set_page_config(page_title="Prune · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Prune")

    # The strategy and its layers sit in the sidebar, below the model they apply to, so that the
    # slider, the numbers and the figure it changes share one screen (1280x720) without scrolling.
    with st.sidebar:
        st.header("Strategy")
        settings = view.controls(choice)
    strategy = settings.strategy
    st.caption(
        f"Strategy **{strategy.label}** on {len(settings.layers)} of "
        f"{len(choice.loaded.prunable)} prunable weights: choose them in the sidebar, below the "
        "model."
    )
    pruner = view.prepare(choice, settings)

    def _masks_controls():
        """Sparsity or threshold, as the strategy selects; returns masks and their label."""
        modes = pruner.strategy.selects_by
        if not modes:
            st.metric("Sparsity (fixed by the pattern)", f"{pruner.strategy.fixed_sparsity:.0%}")
            return pruner.masks(), f"{strategy.label}"
        drive = "sparsity"  # only the control that drives the masks is shown (random: no threshold)
        if len(modes) > 1:
            drive = st.radio("Drive the masks by", modes, horizontal=True, key=Keys.drive)
        if drive == "sparsity":
            what = (
                "heads pruned" if str(pruner.strategy.granularity) == "head" else "weights zeroed"
            )
            sparsity = st.slider(
                f"Sparsity (fraction of {what})", 0.0, 1.0, 0.5, 0.01, key=Keys.sparsity
            )
            implied = view.implied_threshold(pruner, sparsity)
            if implied:
                st.caption(implied)
            return pruner.masks(sparsity=sparsity), f"{strategy.label} at sparsity {sparsity:.0%}"
        low, high, step = view.threshold_range(pruner)
        threshold = st.slider(
            "Threshold (prune scores at or below)",
            low,
            high,
            low,
            step,
            key=Keys.threshold,
            format="%.4g",
        )
        masks = pruner.masks(threshold=threshold)
        st.caption(f"Implied sparsity: {masks.sparsity():.2%}")
        return masks, f"{strategy.label} at threshold {threshold:.4g}"

    @st.fragment
    def results():
        # A slider move reruns only this fragment: a lookup in the cached Pruner, the numbers and
        # the one figure on view (not a chart per hidden tab); figures are kept per layer and mask.
        controls, shown = st.columns([1, 2], gap="medium")
        with controls:
            masks, label = _masks_controls()
        st.session_state[Keys.masks] = masks
        st.session_state[Keys.masks_label] = f"{label} on {choice.bundle.name}"
        recipe = view.recipe_builder(choice, pruner, settings, masks)
        st.session_state[Keys.recipe] = recipe
        with controls:
            if (note := view.reconstruction_note(masks)) is not None:
                st.info(note)
            _summary(masks)
            _recipe_download(recipe)
        with shown:
            _view(masks)
            heads_section(choice, pruner, masks)
            next_token_box(choice, masks)  # language models only

    def _recipe_download(recipe):
        """``recipe``: a callable that builds the Recipe, or None when there can be none."""
        if recipe is None:
            st.caption("Random masks with a seed other than 0 cannot be saved as a recipe.")
            return
        st.download_button(
            "Save these masks as a recipe (YAML)",
            lambda: recipe().dumps(),  # built and written when clicked, not on every move
            file_name=f"{choice.bundle.name}-recipe.yaml",
            mime="text/yaml",
            key="prune_recipe_download",
        )

    def _summary(masks):
        numbers = view.summary(choice, masks)
        # two metrics a row (the controls' column is a third of the page), in two columns: one
        # row of columns instead of three, fewer elements to send and draw on every move; each
        # metric is as tall as one with a change below it, so the rows line up
        left, right = st.columns(2)
        left.metric("Sparsity", f"{numbers.sparsity:.1%}", height=METRIC_HEIGHT)
        right.metric(
            "Nonzero weights",
            count(numbers.kept),
            f"{numbers.kept - numbers.total:,}",
            delta_color="off",
            help=f"{numbers.kept:,} of {numbers.total:,} weights in the pruned layers are kept.",
            height=METRIC_HEIGHT,
        )
        left.metric(
            "Effective FLOPs",
            count(numbers.effective_flops),
            f"{numbers.flops_change:.1%}",
            delta_color="off",
            help=HELP["FLOPs"] + " Counted over the pruned layers.",
            height=METRIC_HEIGHT,
        )
        if choice.data is None:
            right.metric("Quality", "no data", height=METRIC_HEIGHT)
            return
        if not view.evaluates_at_once(choice) and not st.button("Evaluate", key=Keys.evaluate_now):
            right.metric("Quality", "press Evaluate", height=METRIC_HEIGHT)
            return
        pruned, dense = view.metrics(choice, masks)
        if (shown := quality.headline(pruned)) is not None:
            right.metric(
                *shown,
                quality.change(pruned, dense),
                delta_color=quality.inverse_delta(pruned),
                height=METRIC_HEIGHT,
            )
        left.metric(
            "Agreement", percent(pruned["agreement"]), help=HELP["agreement"], height=METRIC_HEIGHT
        )
        right.metric("KL divergence", f"{pruned['kl']:.4f}", help=HELP["KL"], height=METRIC_HEIGHT)
        if "loss" in pruned:
            st.caption(f"Loss {pruned['loss']:.3f} ({pruned['loss'] - dense['loss']:+.3f})")

    def _view(masks):
        """One figure: the view picked for the focus layer (only that one is built)."""
        picked = st.segmented_control(
            "View",
            list(VIEWS),
            default="weights",
            required=True,
            format_func=VIEWS.get,
            key=Keys.view,
            label_visibility="collapsed",
            help="What to draw: one layer's weights before and after, its mask, its weight "
            "histogram with the cut-off, its channels, every layer's sparsity, or the overlap "
            "with another strategy's masks.",
        )
        if picked == "layers":
            st.plotly_chart(
                cache.layer_sparsity_figure(choice.model_key, masks), key="layer_sparsity_chart"
            )
            explain(
                "Each bar is one layer's sparsity, the dashed line the overall sparsity. A global "
                "strategy ranks all weights together, so layers whose weights are small lose more; "
                "a layerwise strategy prunes every layer by the same fraction."
            )
            return
        # one horizontal container, not a row of columns: fewer elements to send and draw
        pickers = st.container(horizontal=True, vertical_alignment="center")
        fqn = pickers.selectbox("Layer", list(masks), key=Keys.focus, label_visibility="collapsed")
        if picked == "compare":
            _compare(masks, fqn)
            return
        layout = "matrix"
        if picked == "weights" and choice.model.get_parameter(fqn).ndim > 2:
            layout = pickers.radio(
                "Layout",
                ("matrix", "filters"),
                horizontal=True,
                width="content",
                key=Keys.heatmap_layout,
                label_visibility="collapsed",
            )
        fig = view.layer_figure(picked, choice, pruner, masks, fqn, layout=layout)
        st.plotly_chart(fig, key=CHART_KEYS[picked], height=HEIGHT)
        if picked == "histogram":
            explain(
                "The distribution of this layer's weights. For magnitude strategies the shaded "
                "band between the dashed lines is what is pruned: every weight whose size is at or "
                "below the cut-off. Most trained layers have many weights near zero."
                if view.magnitude_cut(pruner, fqn) is not None
                else "The distribution of this layer's weights. This strategy's scores are not the "
                "weights' magnitudes, so no single cut-off on this axis describes what it prunes."
            )
        elif picked == "channels":
            _, caption = view.channel_values(choice, pruner, fqn)
            explain(
                f"One bar per channel: the {caption}, coloured by whether the channel keeps any "
                "weight. Channel pruning removes whole bars, which is what can make a model "
                "physically smaller."
            )
        else:
            explain(EXPLAIN[picked])

    def _compare(masks, fqn):
        names = [n for n in list_strategies() if n != strategy.name]
        other = st.selectbox("Compare with", names, key=Keys.compare)
        with error_boundary(), failing_as(f"Cannot compare with {other}"):
            other_masks = view.compare_masks(choice, settings, other, masks.sparsity())
            st.plotly_chart(
                figures.mask_overlap(masks, other_masks, fqn, names=(strategy.name, other)),
                key="overlap",
                height=HEIGHT,
            )
            st.dataframe(
                masks.overlap(other_masks),
                hide_index=True,
                column_config={
                    "fqn": st.column_config.TextColumn("layer", help=HELP["fqn"]),
                    "iou": st.column_config.NumberColumn("IoU", help=HELP["IoU"]),
                },
            )
            explain(
                "Where two strategies agree and disagree on this layer at the same sparsity. IoU "
                "is the overlap of the kept sets: 1 means identical masks; two random masks at "
                "50% sparsity overlap about 0.33."
            )

    results()
    if choice.data is not None:
        # outside the fragment: it does not change with the slider
        lm = choice.bundle.task == "language-model"
        explain(
            (
                quality.LM_NOTE + " "
                if lm
                else "Accuracy and loss use the labels; agreement (same top-1 class as the dense "
                "model) and KL divergence judge fidelity to the dense model, so they work "
                "without labels. "
            )
            + "Effective FLOPs scale each pruned layer's work by the fraction of weights it keeps: "
            "what a sparse kernel could save, not what a dense one does."
        )
