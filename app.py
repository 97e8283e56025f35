"""prunelab: the Streamlit app's landing page."""

import streamlit as st

import prunelab
from prunelab.figures.fmt import percent
from prunelab.ui import cache
from prunelab.ui.errors import error_boundary
from prunelab.ui.sidebar import sidebar

st.set_page_config(page_title="prunelab", layout="wide")
with error_boundary():
    choice = sidebar()

    st.title("prunelab")
    st.markdown(
        "**Pruning** removes weights from a neural network: it sets the least important ones to "
        "zero, or removes whole channels. prunelab lets you *see* what each pruning strategy "
        "removes from a real model and what that costs in accuracy, layer by layer. When you know "
        "how far each layer can go, save a recipe and apply it from Python or the command line."
    )

    cols = st.columns(3)
    cols[0].metric("Model", choice.bundle.name)
    cols[1].metric("Parameters", f"{choice.parameters:,}")
    if choice.data is not None:
        dense = cache.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
        if "accuracy" in dense:
            cols[2].metric("Accuracy (dense)", percent(dense["accuracy"]))
        else:  # unlabelled data (a torchvision model's resized digits): judged by fidelity
            cols[2].metric(
                "Labels",
                "none",
                help="The data has no labels, so no accuracy: pruned versions are judged by "
                "their agreement with this dense model.",
            )
    else:
        cols[2].metric("Data", "none")

    st.subheader("Where to go")
    PAGES = [
        (
            "pages/1_Model.py",
            "Model: the prunable layers, their weights, the dense accuracy",
            ":material/search:",
        ),
        (
            "pages/2_Prune.py",
            "Prune: pick a strategy, move the slider, see what happens",
            ":material/content_cut:",
        ),
        (
            "pages/3_Activations.py",
            "Activations: what flows through the network, and pruning it",
            ":material/waves:",
        ),
        (
            "pages/4_Sensitivity.py",
            "Sensitivity: how far each layer can go, and a recipe",
            ":material/insights:",
        ),
        (
            "pages/5_Train.py",
            "Train: fine-tune, prune gradually, win accuracy back",
            ":material/fitness_center:",
        ),
        (
            "pages/6_Export.py",
            "Export: a really smaller model, sizes, measured speed",
            ":material/inventory_2:",
        ),
        ("pages/7_Learn.py", "Learn: what pruning is, in five small lessons", ":material/school:"),
    ]
    for path, label, icon in PAGES:
        st.page_link(path, label=label, icon=icon)

    with st.expander("Strategies in this installation"):
        st.dataframe(prunelab.strategy_table(), hide_index=True)
    st.caption(f"prunelab {prunelab.__version__}")
