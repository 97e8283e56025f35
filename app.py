"""prunelab: the Streamlit app's landing page."""

import streamlit as st

import prunelab

st.set_page_config(page_title="prunelab", layout="wide")
st.title("prunelab")
st.write(
    "A workbench for understanding and planning neural-network pruning in PyTorch. "
    f"Engine version {prunelab.__version__}; the interactive pages arrive with the app issue."
)
st.dataframe(prunelab.strategy_table(), hide_index=True)
