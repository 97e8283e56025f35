"""Export: from masks to a smaller, faster model, with honest numbers and downloads."""

import streamlit as st

from prunelab import figures
from prunelab.io.exports import load_snippet
from prunelab.ui.errors import error_boundary
from prunelab.ui.quality import inverse_delta
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import export as view
from prunelab.ui.views.export import CHANNEL, CHANNEL_STRATEGY, PRUNE, SPEED_ROUNDS
from prunelab.ui.widgets import explain

st.set_page_config(page_title="Export · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Export")
    st.write(
        "Why is a pruned model not smaller or faster? Zeros in a dense tensor take the same space "
        "and the same time as any other number. This page shows what the masks buy on this "
        "machine: sparse storage formats, a physically smaller model with whole channels removed, "
        "measured speed, and files to take away."
    )

    def _channel_masks() -> view.Picked:
        sparsity = st.slider(
            f"Channel sparsity ({CHANNEL_STRATEGY}, every layer)",
            0.0,
            0.9,
            0.5,
            0.05,
            key=Keys.export_sparsity,
            help="Fraction of output channels pruned in each layer, by their weight norm.",
        )
        return view.channel_masks(choice, sparsity)

    def _recipe_masks() -> view.Picked | None:
        left, _ = st.columns([2, 1])
        upload = left.file_uploader(
            "Recipe (.yaml or .json)", type=["yaml", "yml", "json"], key=Keys.export_recipe
        )
        if upload is None:
            st.info("Upload a recipe saved from the Sensitivity page or `prunelab solve`.")
            return None
        return view.recipe_file_masks(choice, upload.name, upload.getvalue())

    sources = view.mask_sources()
    source = st.radio("Masks", sources, horizontal=True, key=Keys.export_source)
    if source not in sources:
        source = sources[0]
    if source == PRUNE:
        picked = view.prune_page_masks(choice)
        if picked is None:
            st.info("The Prune page's masks belong to another model: prune this one first.")
            st.stop()
    elif source == CHANNEL:
        picked = _channel_masks()
    else:
        picked = _recipe_masks()
        if picked is None:
            st.stop()
    masks = picked.masks
    st.caption(
        f"Using **{picked.label}**: sparsity {masks.sparsity():.1%} of the prunable weights."
    )

    plan = view.plan(choice, picked)
    if isinstance(plan, str):
        st.warning(
            "These masks cannot shrink the model, so only sparse storage applies to them. "
            f"{plan}. "
            + (
                "For a language model, choose the strategy **head-magnitude** on the Prune "
                "page: whole attention heads can be removed."
                if choice.bundle.task == "language-model"
                else f"Choose **{CHANNEL}** above to see a physically smaller model."
            )
        )
        plan = None

    def _downloaded_quality() -> None:
        """Accuracy (or agreement with dense, without labels) of exactly what the downloads
        hold: the masked model (state_dict, sparse) and the shrunk one (pt2), beside dense."""
        st.subheader("What you download")
        if choice.data is None or choice.data_spec is None:
            st.caption("Pick evaluation data in the sidebar to see how well this model does.")
            return
        if not view.auto_evaluate(choice) and not st.button(
            "Evaluate the downloads", key=Keys.export_evaluate
        ):
            st.caption("Press **Evaluate the downloads** to measure them on the data.")
            return
        measured = view.quality(choice, picked, plan)
        dense, label, name = measured.dense, measured.label, measured.name
        cols = st.columns(1 + len(measured.values))
        cols[0].metric(f"{label}: dense", measured.shown(dense))
        delta_color = inverse_delta({name: dense})
        for col, (what, value) in zip(cols[1:], measured.values.items(), strict=True):
            col.metric(
                f"{label}: {what}",
                measured.shown(value),
                measured.change(value),
                delta_color=delta_color,
            )
        if measured.large_drop:
            worst = measured.worst
            st.warning(
                f"Large drop: the model you download scores {measured.shown(worst)} {name} "
                f"against the dense model's {measured.shown(dense)} ({measured.change(worst)}) "
                f"on {choice.data_spec}. Prune less"
                + (
                    " or with SparseGPT/Wanda."
                    if name == "perplexity"
                    else ", or fine-tune it on the Train page first."
                )
            )
        explain(
            f"Measured on {choice.data_spec}, with exactly the weights the files below contain."
            + (
                ""
                if name in ("accuracy", "perplexity")
                else " The data has no labels, so the score is agreement: how often the pruned "
                "model picks the same class as the dense one."
            )
        )

    _downloaded_quality()

    # -- coupled groups ----------------------------------------------------------------------------
    st.subheader("Layers that move together")
    st.dataframe(view.groups(choice, plan), hide_index=True, key="export_groups_table")
    explain(
        "Removing an output channel of a layer also removes the matching entries of everything "
        "coupled to it: its BatchNorm, the next layer's input channel and, in residual networks, "
        "every layer feeding the same addition, which must keep the same channels. A channel is "
        "removed only when every coupled layer prunes it; 'removable' is false for the model's "
        "outputs (the classes, or a language model's vocabulary, stay)."
    )

    # -- sizes -----------------------------------------------------------------------------------
    st.subheader("Size")
    bits = st.selectbox(
        "Quantize kept weights to",
        [None, 8, 4],
        format_func=lambda b: "no quantization (float32)" if b is None else f"{b} bits",
        key=Keys.export_bits,
    )
    table, totals, sizes = view.sizes(choice, picked, bits, plan)
    cols = st.columns(3)
    cols[0].metric("Dense", f"{totals['dense_bytes'] / 1024:,.1f} KB")
    cols[1].metric(
        "Best sparse mix",
        f"{totals['best_bytes'] / 1024:,.1f} KB",
        f"{totals['ratio']:.2f}x smaller",
    )
    if plan is not None:
        cols[2].metric(
            "Shrunk parameters",
            f"{plan.parameters:,}",
            f"{plan.parameters / plan.dense_parameters - 1:+.1%}",
            delta_color="off",
        )
    st.plotly_chart(figures.size_bars(sizes), key="export_size_chart")
    explain(
        "COO stores every kept weight with one 8-byte index per dimension, CSR with one column "
        "index per weight plus a pointer per row, a bitmask with one bit per weight: below about "
        "97% sparsity the bitmask is usually smallest, and at low sparsity plain dense storage "
        "wins. Quantizing the kept values to fewer bits multiplies the saving. The shrunk model "
        "is dense again, just with fewer channels, so it needs no sparse format at all."
    )
    with st.expander("Bytes per layer"):
        st.dataframe(table, hide_index=True, key="export_size_table")

    # -- speed -----------------------------------------------------------------------------------
    st.subheader("Speed on this machine")
    batches = st.multiselect(
        "Batch sizes", [1, 4, 16, 64], default=[1, 16], key=Keys.export_batches
    )
    if st.button("Measure speed", key=Keys.export_speed_run, disabled=not batches):
        view.measure_speed(choice, picked, batches)
    report = view.speed(choice, picked, batches)
    if report is not None:
        st.plotly_chart(figures.speed_bars(report), key="export_speed_chart")
        explain(
            f"Each variant ran warmed up, then {SPEED_ROUNDS} times in interleaved rounds; "
            "q1 and q3 bound the middle half of its times, and a difference from dense counts "
            "only when it is steady from round to round and larger than that spread (else: no "
            f"measurable difference). {report.attrs['explanation']}"
        )
        st.dataframe(report, hide_index=True, key="export_speed_table")
    else:
        st.caption(
            "Press **Measure speed** to time each variant: warmed up, interleaved rounds, "
            "the median with its spread, and a verdict against dense."
        )

    # -- downloads -------------------------------------------------------------------------------
    st.subheader("Downloads")
    if st.button("Prepare files", key=Keys.export_prepare):
        view.prepare_files(choice, picked)
    prepared = view.prepared_files(choice, picked)
    if prepared is not None:
        shown = view.formats(choice)  # hf (save_pretrained) for Hugging Face models only
        cols = st.columns(len(shown))
        for col, fmt in zip(cols, shown, strict=True):
            entry = prepared[fmt]
            with col:
                if isinstance(entry, str):
                    st.error(f"{fmt}: {entry}")
                    continue
                data, info = entry
                name = view.download_name(choice, fmt)
                st.download_button(
                    f"{fmt} ({info.size / 1024:,.0f} KB, {info.model})",
                    data,
                    file_name=name,
                    key=f"export_download_{fmt}",
                )
                if info.note:
                    st.caption(info.note)
                st.code(load_snippet(name, fmt, spec=choice.bundle.spec), language="python")
    else:
        st.caption(
            "Press **Prepare files** to build a baked state_dict, a pt2 program and a sparse file."
        )
    if picked.recipe_text:
        st.download_button(
            "recipe (.yaml)",
            picked.recipe_text.encode(),
            file_name=f"{choice.bundle.name}-recipe.yaml",
            key="export_download_recipe",
        )
    else:
        st.caption("These masks have no recipe (random masks with a seed other than 0).")
    explain(
        "state_dict: the same architecture with zeros written in. pt2: a torch.export program of "
        "the shrunk model (of the masked one when the masks cannot shrink it), which runs without "
        "prunelab and loads with prunelab.io.zoo. sparse: the masked weights in their smallest "
        "sparse layout, loaded back with prunelab.analysis.storage.load_sparse. hf (Hugging "
        "Face models): a save_pretrained directory, zipped, with the zeros written in, the "
        "tokenizer, and tied weights kept tied."
    )
