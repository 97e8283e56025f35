"""Learn: what pruning is, in small interactive lessons."""

import streamlit as st
import torch
from torch import nn

import prunelab
from prunelab import figures
from prunelab.speed import compare_latency
from prunelab.sweeps import sweep
from prunelab.ui import engine
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.widgets import explain

st.set_page_config(page_title="Learn · prunelab", layout="wide")
choice = sidebar()
st.title("Learn pruning")


@st.cache_resource(max_entries=1)
def toy_layer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16))


@st.cache_data(max_entries=8, show_spinner="Evaluating both strategies at ten sparsities...")
def curves(model_key: str, data_spec: str, _choice: engine.Choice):
    levels = [i / 20 for i in range(0, 20, 2)]
    return sweep(
        _choice.model, _choice.data, strategies=["layer-magnitude", "random"], sparsities=levels
    )


toy = toy_layer()
sparsity = st.slider("Sparsity for the lessons", 0.0, 0.95, 0.5, 0.05, key=Keys.learn_sparsity)

st.header("1. A mask decides which weights stay")
masks = prunelab.prune(toy, "layer-magnitude", sparsity=sparsity)
st.plotly_chart(figures.weight_heatmap(toy[0].weight.detach(), masks["0.weight"]), key="l1")
explain(
    "A layer is a matrix of weights (here 16 outputs x 32 inputs). Pruning computes a *mask* of "
    "the same shape, True where a weight is kept, and multiplies the weights by it. Magnitude "
    "pruning keeps the largest |w|: on the right, the small weights have become exactly zero, "
    "the large ones are untouched. Move the slider to prune more."
)

st.header("2. Unstructured, channel and N:M at the same sparsity")
patterns = {
    "unstructured": prunelab.get_strategy("layer-magnitude"),
    # the toy is one layer, its own output: its rows are what this lesson prunes
    "channel": prunelab.get_strategy("layer-magnitude", granularity="channel", prune_outputs=True),
    "2:4": prunelab.get_strategy("n:m"),
}
cols = st.columns(3)
for col, (name, strategy) in zip(cols, patterns.items(), strict=True):
    pruner = prunelab.Pruner(toy, strategy)
    layer_masks = pruner.masks() if name == "2:4" else pruner.masks(sparsity=sparsity)
    with col:
        st.plotly_chart(figures.mask_pattern(layer_masks["0.weight"], title=name), key=f"l2{name}")
explain(
    "Unstructured pruning may remove any weight, so it keeps the most important ones but leaves "
    "scattered holes that ordinary hardware cannot skip. Channel pruning removes whole rows "
    "(output channels): less accurate at the same sparsity, but the layer really becomes smaller. "
    "N:M keeps N of every M consecutive weights (2:4 is always 50%): a regular pattern that some "
    "GPUs run faster."
)

st.header("3. Layerwise or global")
scope_cols = st.columns(2)
for col, name in zip(scope_cols, ("layer-magnitude", "global-magnitude"), strict=True):
    scoped = prunelab.prune(choice.model, name, sparsity=sparsity)
    with col:
        st.plotly_chart(figures.layer_sparsity(scoped, title=name), key=f"l3{name}")
explain(
    f"Both prune {sparsity:.0%} of {choice.bundle.name}'s weights. Layerwise pruning takes the "
    "same fraction from every layer; global pruning ranks all weights together, so layers with "
    "many small weights (often the large ones) lose more and small, sensitive layers are spared."
)

st.header("4. Magnitude beats random")
if choice.data is None:
    st.info("Pick evaluation data in the sidebar to compare accuracies.")
else:
    table = curves(choice.model_key, choice.data_spec, _choice=choice)
    metric = "accuracy" if "accuracy" in table else "agreement"
    st.plotly_chart(figures.sparsity_curves(table, metric=metric), key="l4")
    explain(
        "Accuracy of the pruned model at each sparsity, no fine-tuning. Removing the smallest "
        "weights changes the network's outputs far less than removing the same number at "
        "random: magnitude is a cheap but good proxy for importance. Both collapse eventually; "
        "where the magnitude curve bends down is how far this model can be pruned in one shot."
    )

st.header("5. Zeros alone do not make a model faster")
masked = prunelab.prune(choice.model, "global-magnitude", sparsity=sparsity)
flops = engine.flop_table(choice.model_key, _choice=choice)
dense_flops, effective = engine.effective_flops(flops, masked)
cols = st.columns(3)
cols[0].metric("Effective FLOPs", f"{effective / 1e6:.2f} M", f"{effective / dense_flops - 1:.0%}")
if st.button("Measure latency, dense vs masked", key="learn_latency"):
    # warmed up, interleaved, many rounds: a difference counts only outside the spread
    timing = compare_latency(
        choice.model, masked, example_input=choice.bundle.example_input(batch_size=16)
    )
    for col, label, spread in (
        (cols[1], "Dense forward", timing.base),
        (cols[2], "Masked forward", timing.other),
    ):
        col.metric(
            label,
            f"{spread.median:.3f} ms",
            help=f"Median of the runs; the middle half took {spread.q1:.3f} to {spread.q3:.3f} ms.",
        )
    (st.warning if timing.real else st.info)(timing.explain())
explain(
    "A masked weight is still stored and still multiplied, just by zero: dense kernels do the "
    "same work whatever the values, so latency and memory stay the same. 'Effective FLOPs' is "
    "what a sparse kernel *could* skip. To gain real speed, remove whole channels (a smaller "
    "dense model) or use a sparse format and hardware that exploits it."
)
