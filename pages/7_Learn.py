"""Learn: what pruning is, in small interactive lessons."""

import streamlit as st

from prunelab import figures
from prunelab.ui.errors import error_boundary
from prunelab.ui.fmt import percent
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import learn as view
from prunelab.ui.widgets import explain

st.set_page_config(page_title="Learn · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Learn pruning")
    st.caption("Five short lessons. Each has its own controls on the left, next to its figure.")

    def lesson(title: str):
        """A lesson's heading, then (controls, figure) side by side, so both are in view."""
        st.subheader(title)
        return st.columns([1, 3], gap="medium")

    controls, figure = lesson("1. A mask decides which weights stay")
    with controls:
        sparsity = st.slider(
            "Sparsity (fraction of weights zeroed)", 0.0, 0.95, 0.5, 0.05, key=Keys.learn_sparsity
        )
        explain(
            "A layer is a matrix of weights (here 16 outputs x 32 inputs). Pruning computes a "
            "*mask* of the same shape, True where a weight is kept, and multiplies the weights by "
            "it. Magnitude pruning keeps the largest |w|: on the right, the pruned weights are "
            "black (removed), the kept ones untouched; white means a kept weight near zero."
        )
    with figure:
        heatmap = figures.weight_heatmap(view.toy_weight(), view.toy_masks(sparsity))
        st.plotly_chart(heatmap.update_layout(height=380, margin={"t": 70, "b": 40}), key="l1")

    controls, figure = lesson("2. Unstructured, channel and N:M at the same sparsity")
    with controls:
        pattern_sparsity = st.slider(
            "Sparsity of the unstructured and channel masks",
            0.0,
            0.95,
            0.5,
            0.05,
            key=Keys.learn_pattern_sparsity,
            help="2:4 always keeps 2 of every 4 weights in a row: it is 50% whatever you choose.",
        )
        explain(
            "Unstructured pruning may remove any weight: it keeps the most important ones but "
            "leaves scattered holes that ordinary hardware cannot skip. Channel pruning removes "
            "whole rows (output channels): less accurate at the same sparsity, but the layer "
            "really becomes smaller. N:M keeps N of every M consecutive weights (2:4 is always "
            "50%): a regular comb that some GPUs run faster."
        )
    with figure:
        patterns = view.pattern_masks(pattern_sparsity)
        cols = st.columns(len(patterns))
        for col, (name, mask) in zip(cols, patterns.items(), strict=True):
            pattern = figures.mask_pattern(mask, title=name)
            pattern.update_traces(showscale=False).update_layout(height=300, margin={"t": 70})
            with col:
                st.plotly_chart(pattern, key=f"l2{name}")
        st.caption("Blue: kept weight. Black: pruned weight.")

    controls, figure = lesson("3. Layerwise or global")
    with controls:
        scope_sparsity = st.slider(
            "Sparsity of the whole model", 0.0, 0.95, 0.5, 0.05, key=Keys.learn_layer_sparsity
        )
        explain(
            f"Both prune {scope_sparsity:.0%} of {choice.bundle.name}'s weights. Layerwise pruning "
            "takes the same fraction from every layer; global pruning ranks all weights together, "
            "so layers with many small weights (often the large ones) lose more and small, "
            "sensitive layers are spared."
        )
    with figure:
        scope_cols = st.columns(2)
        for col, name in zip(scope_cols, view.SCOPES, strict=True):
            scoped = view.scope_masks(choice, name, scope_sparsity)
            with col:
                st.plotly_chart(figures.layer_sparsity(scoped, title=name), key=f"l3{name}")

    controls, figure = lesson("4. Magnitude beats random")
    if choice.data is None:
        figure.info("Pick evaluation data in the sidebar to compare accuracies.")
    else:
        table, metric, levels = view.curves(choice)
        with controls:
            marked = st.select_slider(
                "Look at the sparsity",
                levels,
                value=levels[len(levels) // 2],
                key=Keys.learn_curve_marker,
                format_func=lambda level: f"{level:.0%}",
            )
            for name, value in view.at_level(table, metric, marked).items():
                st.metric(f"{name} ({metric})", percent(value))
            explain(
                f"{metric.capitalize()} of the pruned model at each sparsity, no fine-tuning. "
                "Removing the smallest weights changes the network's outputs far less than "
                "removing the same number at random: magnitude is a cheap but good proxy for "
                "importance. Where the magnitude curve bends down is how far this model can be "
                "pruned in one shot."
            )
        with figure:
            chart = figures.sparsity_curves(table, metric=metric)
            chart.add_vline(x=marked * 100, line_dash="dot", line_color="#7f7f7f")
            st.plotly_chart(chart.update_layout(height=400), key="l4")

    controls, figure = lesson("5. Zeros alone do not make a model faster")
    with controls:
        flops_sparsity = st.slider(
            "Sparsity (global magnitude)", 0.0, 0.95, 0.5, 0.05, key=Keys.learn_flops_sparsity
        )
    masked, dense_flops, effective = view.flops(choice, flops_sparsity)
    cols = figure.columns(3)
    cols[0].metric(
        "Effective FLOPs",
        f"{effective / 1e6:.2f} M",
        f"{effective / dense_flops - 1:.0%}",
        delta_color="inverse",  # fewer operations is the good direction
        help="FLOPs: floating-point operations (multiplies and adds) in one forward pass. "
        "Effective: only those with a kept weight, what a sparse kernel could do.",
    )
    if figure.button("Measure latency, dense vs masked", key="learn_latency"):
        timing = view.latency(choice, masked)
        for col, label, spread in (
            (cols[1], "Dense forward", timing.base),
            (cols[2], "Masked forward", timing.other),
        ):
            col.metric(
                label,
                f"{spread.median:.3f} ms",
                help=f"Median of the runs; the middle half took {spread.q1:.3f} to "
                f"{spread.q3:.3f} ms.",
            )
        (figure.warning if timing.real else figure.info)(timing.explain())
    controls.caption(
        "A masked weight is still stored and still multiplied, just by zero: dense kernels do the "
        "same work whatever the values, so latency and memory stay the same. 'Effective FLOPs' is "
        "what a sparse kernel *could* skip. To gain real speed, remove whole channels (a smaller "
        "dense model) or use a sparse format and hardware that exploits it."
    )
