"""Learn: what pruning is, in short lessons, each with its own controls beside its figure."""

import streamlit as st

from prunelab.ui.errors import error_boundary
from prunelab.ui.sidebar import sidebar
from prunelab.ui.views import learn

GLOSSARY = {
    "Sparsity": "the share of a model's (or a layer's) weights that are zero. 70% sparse: "
    "7 weights in 10 pruned.",
    "Mask": "a True/False grid of a weight's shape: True keeps the weight, False prunes it "
    "(sets it to zero).",
    "FLOPs": "floating-point operations, the multiplications and additions of one forward "
    "pass. *Effective* FLOPs count only those that meet a kept weight.",
    "N:M": "a pattern that keeps N of every M consecutive weights, e.g. 2:4 keeps 2 of every "
    "4 (always 50% sparse); some GPUs run 2:4 faster.",
    "Channel": "one output of a layer: a row of a linear layer's weights, or one filter of a "
    "convolution. Removing whole channels makes the layer really smaller.",
    "Fine-tuning": "training a pruned model a little more, with the pruned weights held at "
    "zero, to win back the accuracy pruning lost.",
    "Calibration": "a few batches of data run through the model to measure what the weights "
    "alone cannot tell: gradients and activations, for data-driven criteria.",
}

st.set_page_config(page_title="Learn · prunelab", layout="wide")
ready = False  # the lessons run only after the sidebar and the page's top did
with error_boundary():
    choice = sidebar()
    learn.use(choice)
    st.title("Learn pruning")
    st.markdown(
        f"{len(learn.LESSONS)} short lessons, from what a mask is to what really makes a model "
        "faster. Each has its own controls on the left, next to its figure, and reacts at "
        f"once. The lessons that use a real model use the one picked in the sidebar "
        f"(now **{choice.bundle.name}**)."
    )
    with st.expander("Glossary: the words these lessons use", expanded=True):
        halves = st.columns(2)
        for index, (word, meaning) in enumerate(GLOSSARY.items()):
            halves[index % 2].markdown(f"**{word}**: {meaning}")
    ready = True

for lesson in learn.LESSONS if ready else ():
    with error_boundary():  # a lesson's error leaves the other lessons in place
        st.subheader(lesson.TITLE)
        lesson.render()
