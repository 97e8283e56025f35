"""Prune: pick a strategy and layers, move a slider, see what happens."""

import functools

import streamlit as st

from prunelab import figures, list_strategies
from prunelab.io.recipes import Provenance, Recipe
from prunelab.ui import engine
from prunelab.ui.errors import error_boundary
from prunelab.ui.fmt import HELP, count, percent, points
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.widgets import explain, layer_picker, outputs_option, strategy_picker

st.set_page_config(page_title="Prune · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Prune")

    # The strategy and its layers sit in the sidebar, below the model they apply to, so that the
    # slider, the numbers and the figure it changes share one screen (1280x720) without scrolling.
    with st.sidebar:
        st.header("Strategy")
        strategy = strategy_picker()
        seed = 0
        if strategy.name == "random":
            seed = int(st.number_input("Seed", 0, 10_000, 0, key=Keys.seed))
        layers = layer_picker(choice, strategy)
        strategy = outputs_option(choice, strategy, layers, key=Keys.prune_outputs)
    st.caption(
        f"Strategy **{strategy.label}** on {len(layers)} of {len(choice.loaded.prunable)} "
        "prunable weights: choose them in the sidebar, below the model."
    )

    try:
        pruner = engine.pruner(
            choice.model_key,
            choice.data_spec,
            strategy.name,
            strategy.options,
            layers,
            seed,
            _choice=choice,
        )
    except (ValueError, TypeError) as exc:
        st.error(f"This strategy cannot prune these layers: {exc}")
        st.stop()
    fixed = pruner.strategy.fixed_sparsity

    def _masks_controls():
        """Sparsity or threshold; returns masks and a description of the request."""
        if fixed is not None:
            st.metric("Sparsity (fixed by the pattern)", f"{fixed:.0%}")
            return pruner.masks(), f"{strategy.label}"
        modes = ["sparsity", "threshold"] if pruner.strategy.by_threshold else ["sparsity"]
        drive = "sparsity"  # only the control that drives the masks is shown (random: no threshold)
        if len(modes) > 1:
            drive = st.radio("Drive the masks by", modes, horizontal=True, key=Keys.drive)
        if drive == "sparsity":
            sparsity = st.slider(
                "Sparsity (fraction of weights zeroed)", 0.0, 1.0, 0.5, 0.01, key=Keys.sparsity
            )
            cuts = pruner.implied_thresholds(sparsity)
            if cuts:
                values = sorted(set(cuts.values()))
                text = (
                    f"{values[0]:.4g}"
                    if len(values) == 1
                    else f"{values[0]:.4g} to {values[-1]:.4g}"
                )
                st.caption(
                    f"Implied threshold: {text}" + (" (per layer)" if len(values) > 1 else "")
                )
            return pruner.masks(sparsity=sparsity), f"{strategy.label} at sparsity {sparsity:.0%}"
        low, high = pruner.score_range() or (0.0, 1.0)
        threshold = st.slider(
            "Threshold (prune scores at or below)",
            float(min(low, 0.0)),
            float(high),
            float(min(low, 0.0)),
            (high - min(low, 0.0)) / 200,
            key=Keys.threshold,
            format="%.4g",
        )
        masks = pruner.masks(threshold=threshold)
        st.caption(f"Implied sparsity: {masks.sparsity():.2%}")
        return masks, f"{strategy.label} at threshold {threshold:.4g}"

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

    @st.fragment
    def results():
        # A slider move reruns only this fragment: a lookup in the cached Pruner, the numbers and
        # the one figure on view (not a chart per hidden tab); figures are kept per layer and mask.
        controls, view = st.columns([1, 2], gap="medium")
        with controls:
            masks, label = _masks_controls()
        st.session_state[Keys.masks] = masks
        st.session_state[Keys.masks_label] = f"{label} on {choice.bundle.name}"
        # the recipe is built when someone asks for it (download, Export), not on every move
        savable = not (strategy.name == "random" and seed != 0)
        st.session_state[Keys.recipe] = functools.partial(_recipe, masks) if savable else None
        with controls:
            _summary(masks)
            _recipe_download(st.session_state[Keys.recipe])
        with view:
            _view(masks)

    def _recipe(masks):
        """The recipe that reproduces these masks (not for random masks with a non-zero seed:
        recipes do not carry seeds)."""
        provenance = Provenance(
            model=choice.model_key, data=choice.data_spec, left_out=pruner.left_out.note
        )
        return Recipe.from_masks(masks, pruner.strategy, provenance=provenance)

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
        flops = engine.flop_table(choice.model_key, _choice=choice)
        dense_flops, effective = engine.effective_flops(flops, masks)
        kept, total = sum(masks.kept_counts().values()), sum(masks[f].numel() for f in masks)
        # two metrics a row (the controls' column is a third of the page), in two columns: one
        # row of columns instead of three, fewer elements to send and draw on every move; each
        # metric is as tall as one with a change below it, so the rows line up
        left, right = st.columns(2)
        left.metric("Sparsity", f"{masks.sparsity():.1%}", height=METRIC_HEIGHT)
        right.metric(
            "Nonzero weights",
            count(kept),
            f"{kept - total:,}",
            delta_color="off",
            help=f"{kept:,} of {total:,} weights in the pruned layers are kept.",
            height=METRIC_HEIGHT,
        )
        left.metric(
            "Effective FLOPs",
            count(effective),
            f"{(effective - dense_flops) / max(dense_flops, 1):.1%}",
            delta_color="off",
            help=HELP["FLOPs"] + " Counted over the pruned layers.",
            height=METRIC_HEIGHT,
        )
        if choice.data is None:
            right.metric("Accuracy", "no data", height=METRIC_HEIGHT)
            return
        auto = choice.parameters <= engine.AUTO_EVALUATE_PARAMS
        if not auto and not st.button("Evaluate accuracy", key=Keys.evaluate_now):
            right.metric("Accuracy", "press Evaluate", height=METRIC_HEIGHT)
            return
        dense = engine.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
        pruned = engine.evaluate_masks(choice, masks)
        if "accuracy" in pruned:
            right.metric(
                "Accuracy",
                percent(pruned["accuracy"]),
                points(pruned["accuracy"] - dense["accuracy"]),
                height=METRIC_HEIGHT,
            )
        left.metric(
            "Agreement",
            percent(pruned["agreement"]),
            help=HELP["agreement"],
            height=METRIC_HEIGHT,
        )
        right.metric(
            "KL divergence",
            f"{pruned['kl']:.4f}",
            help=HELP["KL"],
            height=METRIC_HEIGHT,
        )
        if "loss" in pruned:
            st.caption(f"Loss {pruned['loss']:.3f} ({pruned['loss'] - dense['loss']:+.3f})")

    def _view(masks):
        """One figure: the view picked for the focus layer (only that one is built)."""
        fqns = list(masks)
        view = st.segmented_control(
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
        if view == "layers":
            st.plotly_chart(
                engine.layer_sparsity_figure(choice.model_key, masks), key="layer_sparsity_chart"
            )
            explain(
                "Each bar is one layer's sparsity, the dashed line the overall sparsity. A global "
                "strategy ranks all weights together, so layers whose weights are small lose more; "
                "a layerwise strategy prunes every layer by the same fraction."
            )
            return
        # one horizontal container, not a row of columns: fewer elements to send and draw
        pickers = st.container(horizontal=True, vertical_alignment="center")
        fqn = pickers.selectbox("Layer", fqns, key=Keys.focus, label_visibility="collapsed")
        weight = choice.model.get_parameter(fqn).detach()
        mask = masks[fqn]
        if weight.ndim > 1 and engine.out_dim(choice, fqn) == 1:
            # transposed convolutions store (in, out, ...): show output channels as rows
            weight, mask = weight.movedim(1, 0), mask.movedim(1, 0)
        key = (choice.model_key, fqn, engine.digest(mask))
        if view == "weights":
            layout = "matrix"
            if weight.ndim > 2:
                layout = pickers.radio(
                    "Layout",
                    ("matrix", "filters"),
                    horizontal=True,
                    width="content",
                    key=Keys.heatmap_layout,
                    label_visibility="collapsed",
                )
            fig = engine.figure(
                ("heatmap", layout, *key),
                _build=lambda: figures.weight_heatmap(weight, mask, layout=layout),
            )
            st.plotly_chart(fig, key="heatmap", height=HEIGHT)
            explain(
                "Left, the layer's weights; right, the same weights after pruning (pruned ones "
                "are black, off the weight scale). Blue is positive, red negative. Convolution "
                "weights are drawn as output channels by (input channels x kernel positions)."
            )
        elif view == "mask":
            fig = engine.figure(("mask", *key), _build=lambda: figures.mask_pattern(mask))
            st.plotly_chart(fig, key="mask_pattern", height=HEIGHT)
            explain(
                "The mask itself: kept weights blue, pruned ones black. Unstructured "
                "masks look like noise, channel masks like whole rows, N:M masks like a regular "
                "comb along the inputs."
            )
        elif view == "histogram":
            cut = _magnitude_cut(fqn)
            fig = engine.figure(
                ("histogram", choice.model_key, fqn, cut),
                _build=lambda: figures.weight_histogram(weight, threshold=cut),
            )
            st.plotly_chart(fig, key="histogram", height=HEIGHT)
            explain(
                "The distribution of this layer's weights. For magnitude strategies the shaded "
                "band between the dashed lines is what is pruned: every weight whose size is at or "
                "below the cut-off. Most trained layers have many weights near zero."
                if cut is not None
                else "The distribution of this layer's weights. This strategy's scores are not the "
                "weights' magnitudes, so no single cut-off on this axis describes what it prunes."
            )
        elif view == "channels":
            _channels(fqn, weight, mask)
        else:
            _compare(masks, fqn)

    def _channels(fqn, weight, mask):
        scores = pruner.scores().get(fqn)
        if scores is not None and scores.ndim == 1:
            values, caption = scores, "score of each output channel (what the strategy ranks)"
        else:
            values = weight.abs().flatten(1).sum(dim=1) if weight.ndim > 1 else weight.abs()
            caption = "L1 norm of each output channel's weights"
        fig = engine.figure(
            ("channels", choice.model_key, fqn, engine.digest(values, mask)),
            _build=lambda: figures.channel_magnitudes(values, mask),
        )
        st.plotly_chart(fig, key="channels", height=HEIGHT)
        explain(
            f"One bar per channel: the {caption}, coloured by whether the channel keeps any "
            "weight. Channel pruning removes whole bars, which is what can make a model "
            "physically smaller."
        )

    def _magnitude_cut(fqn):
        if strategy.name not in ("global-magnitude", "layer-magnitude", "threshold"):
            return None
        if dict(strategy.options).get("granularity", "unstructured") != "unstructured":
            return None
        mode = st.session_state.get(Keys.drive, "sparsity")
        if mode == "threshold":
            return float(st.session_state[Keys.threshold])
        return pruner.implied_thresholds(st.session_state[Keys.sparsity]).get(fqn)

    def _compare(masks, fqn):
        names = [n for n in list_strategies() if n != strategy.name]
        other = st.selectbox("Compare with", names, key=Keys.compare)
        try:
            other_pruner = engine.pruner(
                choice.model_key, choice.data_spec, other, (), layers, 0, _choice=choice
            )
            target = masks.sparsity()
            other_masks = (
                other_pruner.masks()
                if other_pruner.strategy.fixed_sparsity is not None
                else other_pruner.masks(sparsity=target)
            )
        except (ValueError, TypeError) as exc:
            st.error(f"Cannot compare with {other}: {exc}")
            return
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
            "Where two strategies agree and disagree on this layer at the same sparsity. IoU is "
            "the overlap of the kept sets: 1 means identical masks; two random masks at 50% "
            "sparsity overlap about 0.33."
        )

    results()
    if choice.data is not None:
        # outside the fragment: it does not change with the slider
        explain(
            "Accuracy and loss use the labels; agreement (same top-1 class as the dense model) "
            "and KL divergence judge fidelity to the dense model, so they work without labels. "
            "Effective FLOPs scale each pruned layer's work by the fraction of weights it keeps: "
            "what a sparse kernel could save, not what a dense one does."
        )
