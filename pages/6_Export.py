"""Export: from masks to a smaller, faster model, with honest numbers and downloads."""

import pandas as pd
import streamlit as st

from prunelab import figures
from prunelab.analysis import compression, speed_report, storage_table
from prunelab.core.masks import Masks
from prunelab.core.targets import targets
from prunelab.io.exports import FORMATS, SUFFIXES, export_bytes, load_snippet
from prunelab.io.recipes import Recipe
from prunelab.shrinking import coupled_groups, plan_shrink
from prunelab.ui import engine
from prunelab.ui.errors import error_boundary
from prunelab.ui.fmt import percent, points
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
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

    PRUNE, RECIPE, CHANNEL = "masks from the Prune page", "a recipe file", "channel pruning here"
    CHANNEL_STRATEGY = "weight-norm-channel"
    SPEED_ROUNDS = 21  # interleaved timing rounds per batch size
    LARGE_DROP = 0.05  # accuracy or agreement lost (absolute): worth a warning before download

    # the masks travel to the cached functions unhashed (as _masks); their digest is the key

    @st.cache_data(max_entries=8, show_spinner="Tracing the model's dependency graph...")
    def _groups(model_key: str, _choice) -> pd.DataFrame:
        return coupled_groups(_choice.model, _choice.bundle.example_input())

    # each plan holds a shrunk copy of its model: keep few
    @st.cache_resource(max_entries=4, show_spinner="Working out which channels can go...")
    def _plan(model_key: str, digest: str, _choice, _masks: Masks):
        try:
            return plan_shrink(_choice.model, _masks, example_input=_choice.bundle.example_input())
        except ValueError as exc:
            return str(exc)

    @st.cache_data(max_entries=16, show_spinner="Counting bytes...")
    def _sizes(model_key: str, digest: str, bits: int | None, _choice, _masks: Masks):
        return storage_table(_choice.model, _masks, bits=bits), compression(
            _choice.model, _masks, bits=bits
        )

    def _channel_masks() -> tuple[Masks, str, str]:
        sparsity = st.slider(
            f"Channel sparsity ({CHANNEL_STRATEGY}, every layer)",
            0.0,
            0.9,
            0.5,
            0.05,
            key=Keys.export_sparsity,
            help="Fraction of output channels pruned in each layer, by their weight norm.",
        )
        layers = tuple(t.fqn for t in targets(choice.model))
        pruner = engine.pruner(
            choice.model_key, choice.data_spec, CHANNEL_STRATEGY, (), layers, 0, _choice=choice
        )
        recipe = Recipe(strategy=CHANNEL_STRATEGY, granularity="channel", default_sparsity=sparsity)
        label = f"{CHANNEL_STRATEGY} at {sparsity:.0%}"
        return pruner.masks(sparsity=sparsity), label, recipe.dumps()

    def _recipe_masks() -> tuple[Masks, str, str] | None:
        left, _ = st.columns([2, 1])
        upload = left.file_uploader(
            "Recipe (.yaml or .json)", type=["yaml", "yml", "json"], key=Keys.export_recipe
        )
        if upload is None:
            st.info("Upload a recipe saved from the Sensitivity page or `prunelab solve`.")
            return None
        text = upload.getvalue().decode("utf-8", errors="replace")
        recipe = Recipe.loads(text, name=upload.name)
        calibration = None
        if recipe.build_strategy().needs:
            if choice.data is None or choice.data_spec is None:
                raise ValueError(f"the recipe's strategy {recipe.strategy!r} needs data: pick data")
            calibration = engine.calibration(choice.model_key, choice.data_spec, choice)
        return recipe.masks(choice.model, calibration), f"recipe {upload.name}", recipe.dumps()

    has_current = isinstance(st.session_state.get(Keys.masks), Masks)
    sources = [PRUNE, CHANNEL, RECIPE] if has_current else [CHANNEL, RECIPE]
    source = st.radio("Masks", sources, horizontal=True, key=Keys.export_source)
    if source not in sources:
        source = sources[0]
    recipe_text = None
    try:
        if source == PRUNE:
            masks = st.session_state[Keys.masks]
            label = st.session_state.get(Keys.masks_label, "the Prune page's masks")
            current_recipe = st.session_state.get(Keys.recipe)
            recipe_text = current_recipe().dumps() if current_recipe is not None else None
            if engine.masks_misfit(choice, masks):
                st.info("The Prune page's masks belong to another model: prune this one first.")
                st.stop()
        elif source == CHANNEL:
            masks, label, recipe_text = _channel_masks()
        else:
            picked = _recipe_masks()
            if picked is None:
                st.stop()
            masks, label, recipe_text = picked
    except (ValueError, TypeError) as exc:
        st.error(f"Could not build the masks: {exc}")
        st.stop()
    digest = engine.masks_digest(masks)
    st.caption(f"Using **{label}**: sparsity {masks.sparsity():.1%} of the prunable weights.")

    plan = _plan(choice.model_key, digest, choice, masks)
    if isinstance(plan, str):
        st.warning(
            "These masks cannot shrink the model, so only sparse storage applies to them. "
            f"{plan}. Choose **{CHANNEL}** above to see a physically smaller model."
        )
        plan = None

    def _downloaded_quality() -> None:
        """Accuracy (or agreement with dense, without labels) of exactly what the downloads
        hold: the masked model (state_dict, sparse) and the shrunk one (pt2), beside dense."""
        st.subheader("What you download")
        if choice.data is None or choice.data_spec is None:
            st.caption("Pick evaluation data in the sidebar to see how well this model does.")
            return
        auto = choice.parameters <= engine.AUTO_EVALUATE_PARAMS
        if not auto and not st.button("Evaluate the downloads", key=Keys.export_evaluate):
            st.caption("Press **Evaluate the downloads** to measure them on the data.")
            return
        dense = engine.dense_metrics(choice.model_key, choice.data_spec, _choice=choice)
        name = "accuracy" if "accuracy" in dense else "agreement"
        label = "Accuracy" if name == "accuracy" else "Agreement with dense"
        # the pt2 holds the shrunk model, which computes what the masks extended to every
        # coupled tensor compute (plan.masks); state_dict and sparse hold the masks as they are
        models = {"state_dict, sparse" if plan is not None else "download": masks}
        if plan is not None:
            models["pt2, shrunk"] = plan.masks
        values = {what: engine.evaluate_masks(choice, m)[name] for what, m in models.items()}
        if len(values) == 2 and abs(values["pt2, shrunk"] - values["state_dict, sparse"]) < 1e-9:
            values = {"download": values["state_dict, sparse"]}
        cols = st.columns(1 + len(values))
        cols[0].metric(f"{label}: dense", percent(dense[name]))
        for col, (what, value) in zip(cols[1:], values.items(), strict=True):
            col.metric(f"{label}: {what}", percent(value), points(value - dense[name]))
        worst = min(values.values())
        if dense[name] - worst > LARGE_DROP:
            st.warning(
                f"Large drop: the model you download scores {percent(worst)} {name} against the "
                f"dense model's {percent(dense[name])} ({points(worst - dense[name])}) on "
                f"{choice.data_spec}. Prune less, or fine-tune it on the Train page first."
            )
        explain(
            f"Measured on {choice.data_spec}, with exactly the weights the files below contain."
            + (
                ""
                if name == "accuracy"
                else " The data has no labels, so the score is agreement: how often the pruned "
                "model picks the same class as the dense one."
            )
        )

    _downloaded_quality()

    # -- coupled groups ----------------------------------------------------------------------------
    st.subheader("Layers that move together")
    try:
        groups = _groups(choice.model_key, choice)
    except ValueError as exc:
        st.error(f"Could not trace the model: {exc}")
        st.stop()
    shown = groups if plan is None else plan.groups
    shown = shown[shown["size"] > 1] if (shown["size"] > 1).any() else shown
    st.dataframe(shown, hide_index=True, key="export_groups_table")
    explain(
        "Removing an output channel of a layer also removes the matching entries of everything "
        "coupled to it: its BatchNorm, the next layer's input channel and, in residual networks, "
        "every layer feeding the same addition, which must keep the same channels. A channel is "
        "removed only when every coupled layer prunes it; 'removable' is false for the model's "
        "outputs (the classes stay)."
    )

    # -- sizes -----------------------------------------------------------------------------------
    st.subheader("Size")
    bits = st.selectbox(
        "Quantize kept weights to",
        [None, 8, 4],
        format_func=lambda b: "no quantization (float32)" if b is None else f"{b} bits",
        key=Keys.export_bits,
    )
    table, totals = _sizes(choice.model_key, digest, bits, choice, masks)
    sizes = {
        "dense": totals["dense_bytes"],
        "COO": totals["coo_bytes"],
        "CSR": totals["csr_bytes"],
        "bitmask": totals["bitmask_bytes"],
        "best mix": totals["best_bytes"],
    }
    if bits is not None:
        sizes[f"best + {bits}-bit"] = totals["quantized_bytes"]
    if plan is not None:
        element = next(iter(choice.model.parameters())).element_size()
        buffers = sum(b.numel() * b.element_size() for b in choice.model.buffers())
        sizes["shrunk"] = plan.parameters * element + buffers
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
    result_key = (choice.model_key, digest, tuple(batches))
    stored = st.session_state.get(Keys.export_speed_result)
    if st.button("Measure speed", key=Keys.export_speed_run, disabled=not batches):
        bar, report_progress = engine.progress_bar("Timing dense, masked and shrunk")
        try:
            report_progress(0.1, "measuring")
            report = speed_report(
                choice.model,
                masks,
                example_input=choice.bundle.example_input(),
                batch_sizes=tuple(sorted(batches)),
                repeats=SPEED_ROUNDS,
            )
            report_progress(1.0, "done")
            stored = (result_key, report)
            st.session_state[Keys.export_speed_result] = stored
        except (ValueError, RuntimeError) as exc:
            st.error(f"Could not time the model: {exc}")
        bar.empty()
    if stored is not None and stored[0] == result_key:
        report = stored[1]
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
    files_key = (choice.model_key, digest)
    prepared = st.session_state.get(Keys.export_files)
    if st.button("Prepare files", key=Keys.export_prepare):
        files = {}
        bar, report_progress = engine.progress_bar("Exporting")
        for index, fmt in enumerate(FORMATS):
            report_progress(index / len(FORMATS), fmt)
            try:
                files[fmt] = export_bytes(
                    choice.model, masks, format=fmt, example_input=choice.bundle.example_input()
                )
            except ValueError as exc:
                files[fmt] = str(exc)
        bar.empty()
        prepared = (files_key, files)
        st.session_state[Keys.export_files] = prepared
    if prepared is not None and prepared[0] == files_key:
        cols = st.columns(len(FORMATS))
        for col, fmt in zip(cols, FORMATS, strict=True):
            entry = prepared[1][fmt]
            with col:
                if isinstance(entry, str):
                    st.error(f"{fmt}: {entry}")
                    continue
                data, info = entry
                name = f"{choice.bundle.name}-pruned{SUFFIXES[fmt]}"
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
    if recipe_text:
        st.download_button(
            "recipe (.yaml)",
            recipe_text.encode(),
            file_name=f"{choice.bundle.name}-recipe.yaml",
            key="export_download_recipe",
        )
    else:
        st.caption("These masks have no recipe (random masks with a seed other than 0).")
    explain(
        "state_dict: the same architecture with zeros written in. pt2: a torch.export program of "
        "the shrunk model (of the masked one when the masks cannot shrink it), which runs without "
        "prunelab and loads with prunelab.io.zoo. sparse: the masked weights in their smallest "
        "sparse layout, loaded back with prunelab.analysis.storage.load_sparse."
    )
