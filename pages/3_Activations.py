"""Activations: what flows through the network, how weight pruning shifts it, and pruning it."""

import streamlit as st

from prunelab import figures
from prunelab.activations import AGGREGATE_FNS, MASK_FNS, REDUCE_FNS
from prunelab.figures.fmt import HELP, percent, points
from prunelab.ui.errors import error_boundary
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import activations as view
from prunelab.ui.widgets import explain

MAX_BOX_CHANNELS = 64

st.set_page_config(page_title="Activations · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    # a language model's accuracy is the share of next tokens guessed right, not of classes
    ACCURACY = "Next-token accuracy" if choice.bundle.task == "language-model" else "Accuracy"
    st.title("Activations")
    st.write(
        "Weight pruning zeroes **parameters**: the same zeros for every input, fixed once. "
        "Activation pruning zeroes **values flowing between layers**: they depend on the input, "
        "so a layer's work shrinks only where its inputs are zero. Here you see the activations of "
        "one layer, how the weight masks from the Prune page shift them, and what zeroing more of "
        "them costs."
    )
    if choice.data is None:
        st.info("Activations depend on the inputs: pick evaluation data in the sidebar.")
        st.stop()

    names = view.layer_names(choice)
    if not names:
        st.info("This model has no Linear, Conv, RNN, activation or pooling module to look into.")
        st.stop()
    left, right = st.columns([2, 1])
    layer = left.selectbox(
        "Layer",
        names,
        index=view.default_layer(names),
        key=Keys.act_layer,
        format_func=lambda name: view.describe(choice, name),
        help="A module's output, or what enters a prunable layer (':input'). Models that apply "
        "ReLU as a function show their rectified activations as the input of the next layer.",
    )
    masks = view.prune_page_masks(choice)
    with right:
        if masks is None:
            use_masks = False
            st.caption("No weight masks for this model yet: prune it on the Prune page to compare.")
        else:
            use_masks = st.checkbox(
                "Compare with the weight masks from the Prune page",
                value=True,
                key=Keys.act_with_masks,
                help=masks.label or "",
            )
            st.caption(f"Masks: {masks.label or 'from the Prune page'}")
    active = masks if use_masks else None
    dense, after = view.statistics(choice, layer, active)

    cols = st.columns(4)
    cols[0].metric("Channels", f"{dense.channels:,}", help=f"shape per sample {dense.sample_shape}")
    cols[1].metric(
        "Exact zeros (activation sparsity)",
        f"{dense.sparsity:.1%}",
        None if after is None else f"{after.sparsity - dense.sparsity:+.1%} with masks",
        delta_color="off",
    )
    cols[2].metric(
        "Dead channels",
        f"{len(dense.dead_channels)}",
        None if after is None else f"{len(after.dead_channels)} with masks",
        delta_color="off",
    )
    cols[3].metric("Values per channel", f"{dense.count:,}", help="samples x positions seen")
    names_pair = ("dense", "with weight masks")

    tabs = st.tabs(
        ["Distribution", "Per channel", "Zeros and dead channels", "Sparsity", "Sparsifier"]
    )
    with tabs[0]:
        log_y = st.checkbox("Log scale", key=Keys.act_log_y)
        st.plotly_chart(
            figures.activation_histogram(dense, after, names=names_pair, log_y=log_y),
            key="act_histogram",
        )
        explain(
            "The share of this layer's values in each bin, over all channels. After a ReLU many "
            "values are exactly zero: they pile up in the bin at 0 (the title gives their exact "
            "share). With the weight masks, the orange distribution shows how pruning the weights "
            "upstream shifts and narrows what this layer sees. Statistics are streamed batch by "
            "batch, so no activation is stored."
        )
    with tabs[1]:
        st.plotly_chart(
            figures.channel_ranges(dense, after, max_channels=MAX_BOX_CHANNELS, names=names_pair),
            key="act_ranges",
        )
        explain(
            "One box per channel: the middle half of its values (quartiles, with the median), "
            "whiskers at its smallest and largest value, the dashed line its mean. The raw values "
            "are not kept: quartiles are read from each channel's streamed histogram, within about "
            "a bin width. Channels with a narrow box near zero contribute little downstream."
            + (
                f" The first {MAX_BOX_CHANNELS} of {dense.channels} channels are shown."
                if dense.channels > MAX_BOX_CHANNELS
                else ""
            )
        )
    with tabs[2]:
        st.plotly_chart(figures.channel_apoz(dense, after, names=names_pair), key="act_apoz")
        dead = dense.dead_channels
        text = f"Dead channels (dense): {dead}" if dead else "No dead channel in the dense model."
        if after is not None:
            text += f" With the weight masks: {after.dead_channels or 'none'}."
        st.write(text)
        explain(
            "APoZ, the average percentage of zeros, is how often each channel outputs exactly 0. "
            "A channel that is zero for every input (red) is dead: it can be removed without "
            "changing any output, which is why APoZ is a criterion for channel pruning. Weight "
            "pruning can kill channels downstream: compare the two colours."
        )

    limit = view.threshold_limit(dense)

    @st.fragment  # a threshold move reruns this panel only, not the page's other charts
    def _sparsity_panel():
        threshold = st.slider(
            "Threshold: zero activations with |value| below",
            0.0,
            limit,
            0.0,
            limit / 100,
            key=Keys.act_threshold,
            format="%.4g",
        )
        with error_boundary():  # an error here leaves the page's other panels in place
            effect = view.thresholded(choice, layer, threshold, active)
            cols = st.columns(4)
            cols[0].metric(
                "Activation sparsity",
                f"{effect['sparsity']:.1%}",
                f"{effect['sparsity'] - effect['natural_sparsity']:+.1%} by the threshold",
                delta_color="off",
            )
            if "accuracy" in effect:
                cols[1].metric(
                    ACCURACY,
                    percent(effect["accuracy"]),
                    points(effect["accuracy"] - effect["dense_accuracy"]),
                )
            cols[2].metric(
                "Agreement with dense", percent(effect["agreement"]), help=HELP["agreement"]
            )
            cols[3].metric("KL(dense ‖ thresholded)", f"{effect['kl']:.4f}", help=HELP["KL"])
            shown = after if after is not None else dense
            histogram = view.threshold_histogram(choice, layer, active, shown, threshold)
            st.plotly_chart(histogram, key="act_threshold_histogram")

    def _sparsifier_panel():
        inputs = view.input_layers(names)
        if layer not in inputs:
            st.info(
                "The activation sparsifier masks what *enters* a layer. Pick one of "
                f"{', '.join(inputs)} above."
            )
            return
        cols = st.columns(4)
        aggregate = cols[0].selectbox(
            "Aggregate over batches", list(AGGREGATE_FNS), key=Keys.act_aggregate
        )
        reduce = cols[1].selectbox("Reduce", list(REDUCE_FNS), key=Keys.act_reduce)
        mask_fn = cols[2].selectbox("Mask", list(MASK_FNS), key=Keys.act_mask_fn)
        per_feature = cols[3].checkbox(
            "Per feature",
            key=Keys.act_per_feature,
            help="One mask per channel, each from that channel's values alone.",
        )
        if mask_fn == "threshold":
            value = st.number_input(
                "Keep positions whose reduced |value| is at least",
                min_value=0.0,
                value=0.1,
                step=0.05,
                format="%.4g",
                key=Keys.act_mask_threshold,
            )
        else:
            value = st.slider(
                "Sparsity level (fraction of positions zeroed)",
                0.0,
                1.0,
                0.5,
                0.05,
                key=Keys.act_sparsity_level,
            )
        settings = view.SparsifierSettings.of(
            layer,
            dense,
            aggregate=aggregate,
            reduce=reduce,
            mask_fn=mask_fn,
            per_feature=per_feature,
            value=value,
        )
        if not view.may_sparsify(choice, settings):
            if not st.button("Run the sparsifier", key=Keys.act_sparsify_run):
                st.caption(
                    f"{choice.bundle.name} has {choice.parameters:,} parameters: observing the "
                    "data and evaluating the masked model takes a while, so it runs when you "
                    "press the button."
                )
                return
            view.remember_sparsify(choice, settings)
        with error_boundary():  # an error here leaves the page's other panels in place
            result = view.sparsify(choice, settings, layer)
            cols = st.columns(2)
            cols[0].metric("Positions kept by the mask", f"{result.kept:.1%}")
            if result.accuracy is not None:
                cols[1].metric(
                    f"{ACCURACY} with the mask",
                    percent(result.accuracy),
                    points(result.accuracy - result.dense_accuracy),
                )
            module = settings.module
            st.plotly_chart(
                figures.activation_mask(
                    result.mask, features=settings.features, title=f"Mask on what enters {module}"
                ),
                key="act_mask",
            )
        explain(
            "The sparsifier (as in torch.ao.pruning) adds up the inputs of this layer batch by "
            "batch (aggregate), reduces the sum over the batch (reduce) and turns it into a fixed "
            "mask that multiplies every later input: blue positions are kept, black ones always "
            "zeroed. The mask depends on the position, not on the input, so it acts like pruning "
            "the layer's input weights at those positions. Per feature, each channel gets its own "
            "mask from its own values: with a threshold that changes nothing, with a sparsity "
            "level every channel keeps the same share. Weight masks are not applied here."
        )

    with tabs[3]:
        _sparsity_panel()
        # outside the fragment: the text does not change with the threshold, so a move does
        # not send and draw it again
        explain(
            "Activation thresholding zeroes, at inference, every value of this layer whose size is "
            "below the threshold (the shaded band). Unlike a weight mask it is recomputed for "
            "every input, so it cannot make the model smaller, only its work sparser. Activation "
            "sparsity counts all exact zeros, those the ReLU made already plus those the threshold "
            "adds; accuracy, agreement and KL compare with the dense model"
            + (", with the weight masks applied as well." if active is not None else ".")
        )

    with tabs[4]:
        _sparsifier_panel()
