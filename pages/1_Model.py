"""Model: what can be pruned, how the weights look, how good the dense model is."""

import streamlit as st

from prunelab import figures
from prunelab.figures.fmt import HELP
from prunelab.runtime import memory
from prunelab.ui import cache, quality
from prunelab.ui.errors import error_boundary
from prunelab.ui.sidebar import data_name as sidebar_data_name
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import model as view
from prunelab.ui.widgets import explain

st.set_page_config(page_title="Model · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title(f"Model: {choice.bundle.name}")

    cols = st.columns(5)
    cols[0].metric(
        "Parameters", memory.format_count(choice.parameters), help=f"{choice.parameters:,}"
    )
    cols[1].metric("Input", "x".join(map(str, choice.bundle.input_shape)))
    cols[4].metric("Memory", memory.format_bytes(choice.loaded.model_bytes))
    if choice.data is not None:
        data_name = sidebar_data_name(choice)
        dense = cache.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
        if (shown := quality.headline(dense)) is not None:
            cols[2].metric(f"{shown[0]} (dense)", shown[1])
            cols[3].metric("Loss (dense)", f"{dense['loss']:.4f}")
            unit = "sequences" if "perplexity" in dense else "samples"
            explain(
                f"Measured now on {data_name} ({int(dense['samples']):,} test {unit}): the "
                "baseline every pruned version is compared with."
                + (f" {quality.lm_note(dense)}" if quality.lm_note(dense) else "")
            )
        else:
            cols[2].metric("Labels", "none", help="The data has no labels: no accuracy.")
            explain(
                f"{data_name} ({int(dense['samples']):,} samples) has no labels, so no accuracy "
                "is measured: each pruned version is judged by its fidelity to this dense model, "
                "the share of inputs where both pick the same class (agreement) and how far "
                "their output distributions differ (KL divergence)."
            )
    else:
        cols[2].metric("Accuracy", "no data")
    explain(view.memory_note(choice))

    st.subheader("Prunable tensors")
    stats = view.layer_table(choice)
    st.dataframe(
        stats,
        hide_index=True,
        column_config={
            "share of FLOPs": st.column_config.ProgressColumn(
                format="percent", min_value=0, max_value=1
            ),
            "near zero": st.column_config.NumberColumn(format="percent"),
            "fqn": st.column_config.TextColumn("layer (fqn)", help=HELP["fqn"]),
        },
    )
    explain(
        "The weights prunelab can prune: Linear (and GPT-2's Conv1D, a Linear stored "
        "transposed), convolution and recurrent layers (biases, embeddings and normalisation "
        "layers are left alone; a language model's output head tied to its embedding is not "
        "pruned either). 'Share of FLOPs' is each layer's part of the work "
        "of all prunable layers for one input; 'near zero' is the fraction of weights within 5% of "
        "the layer's largest magnitude: a first hint of how much magnitude pruning can remove "
        "for free."
    )

    st.subheader("Weight distribution")
    fqn = st.selectbox("Layer", list(stats["fqn"]), key=Keys.model_focus, help=HELP["fqn"])
    st.plotly_chart(figures.weight_histogram(view.layer_weight(choice, fqn)), key="model_histogram")
    explain(
        "How this layer's weights are spread. Trained layers are usually peaked at zero with "
        "long tails: magnitude pruning removes the peak and keeps the tails."
    )
    if choice.bundle.card:
        with st.expander("Model card"):
            st.json(dict(choice.bundle.card))
