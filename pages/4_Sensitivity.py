"""Sensitivity: how far can each layer be pruned? From there, a recipe."""

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from prunelab import figures, list_strategies
from prunelab.core.strategies import get_strategy
from prunelab.core.targets import targets
from prunelab.sweeps import (
    RunOptions,
    SensitivityConfig,
    estimate_sensitivity,
    estimate_sweep,
    predict_drop,
    sensitivity,
    solve,
    sweep,
)
from prunelab.ui import engine, jobs
from prunelab.ui.errors import error_boundary
from prunelab.ui.fmt import HELP, metric_change, metric_value
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.widgets import StrategyChoice, explain, outputs_option

# the recipe's sparsities are rounded once, here, so the table shows what the file holds
DECIMALS = 3
LEVELS = {
    3: (0.3, 0.6, 0.9),
    5: (0.2, 0.4, 0.6, 0.8, 0.95),
    9: tuple(round(0.1 * i, 2) for i in range(1, 10)),
    19: tuple(round(0.05 * i, 2) for i in range(1, 20)),
}


st.set_page_config(page_title="Sensitivity · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()

    def computed(prefix, settings, work, *, measure=None, label, running):
        """The result for ``settings``: remembered, else run as a job (None until one finishes).

        ``work(checkpoint, report)`` resumes the job's saved rows of these settings, if any. The
        finished checkpoint stays in the session's folder: if the shared result store drops the
        result, the job reads it back from there instead of running again.
        """
        result = engine.remembered(settings)
        if result is not None:
            return result
        job = jobs.Job(prefix, settings)
        estimate = None if measure is None else job.estimate(measure)
        result = jobs.start(job, estimate, work, label=label, running=running)
        if result is None:
            return None
        result.attrs.update(model=choice.model_key, data=choice.data_spec)
        engine.remember(settings, result)
        st.rerun()  # redraw without the Cancel button: the result is remembered now

    st.title("Sensitivity and recipes")
    st.write(
        "Prune one layer at a time, at several sparsities, and measure how much worse the model "
        "gets: robust layers can be pruned hard, fragile ones should be spared. Then let the "
        "solver spread an overall sparsity over the layers by their sensitivity."
    )

    all_layers = [t.fqn for t in targets(choice.model)]
    usable = [n for n in list_strategies() if get_strategy(n).fixed_sparsity is None]
    cols = st.columns([2, 1, 1, 1])
    layers = cols[0].multiselect(
        "Layers",
        all_layers,
        default=all_layers,
        # one selection per model: another model's choice would keep only the names both share
        key=f"{Keys.sens_layers}_{choice.model_key}",
    )
    strategy = cols[1].selectbox(
        "Strategy per layer",
        usable,
        index=usable.index("layer-magnitude"),
        key=Keys.strategy + "_s",
    )
    with cols[0]:
        options = outputs_option(
            choice, StrategyChoice(strategy, ()), layers, key=Keys.sens_prune_outputs
        ).options
    count = cols[2].select_slider("Levels", [3, 5, 9, 19], value=9, key=Keys.sens_levels)
    levels = LEVELS[count]
    if choice.data is None:
        method, subset, early_stop, metric = "magnitude", None, None, "energy_removed"
        cols[3].caption("No data: the data-free magnitude proxy is used.")
    else:
        method = "evaluate"
        size = len(choice.data)
        subset = int(
            cols[3].number_input(
                "Samples",
                16,
                size,
                min(size, 500),
                step=16,
                key=Keys.sens_subset,
                help="Evaluate on the first N samples: fewer is faster, more is steadier.",
            )
        )
        stop = st.checkbox("Stop a layer once it has lost more than", key=Keys.sens_early_stop)
        early_stop = (
            st.slider("drop bound", 0.01, 0.5, 0.1, 0.01, key="sens_stop_value") if stop else None
        )
        labelled = isinstance(choice.data[0], (tuple, list)) and len(choice.data[0]) == 2
        metric = "accuracy" if labelled else "agreement"
    if not layers:
        st.info("Pick at least one layer.")
        st.stop()

    settings = (
        "sensitivity",
        choice.model_key,
        choice.data_spec,
        tuple(layers),
        strategy,
        options,
        levels,
        method,
        subset,
        early_stop,
        metric,
    )
    config = SensitivityConfig(
        layers=layers, method=method, metric=metric, early_stop=early_stop, subset=subset
    )

    def analyse(checkpoint, report):
        cal = None
        if get_strategy(strategy, **dict(options)).needs:
            cal = engine.calibration(choice.model_key, choice.data_spec, _choice=choice)
        return sensitivity(
            choice.model,
            choice.data,
            strategy=get_strategy(strategy, **dict(options)),
            sparsities=levels,
            config=replace(config, calibration=cal),
            # the data-free proxy finishes at once: nothing to checkpoint
            run=RunOptions(
                progress=report,
                checkpoint=checkpoint if method == "evaluate" else None,
                resume=True,
            ),
        )

    def estimate_analysis():
        return estimate_sensitivity(
            choice.model,
            choice.data,
            strategy=get_strategy(strategy, **dict(options)),
            sparsities=levels,
            config=config,
        )

    table = computed(
        Keys.sens_job,
        settings,
        analyse,
        measure=estimate_analysis if method == "evaluate" else None,  # the proxy takes no time
        label="Run the analysis",
        running="Pruning one layer at a time",
    )
    if table is None:
        st.info(
            "Choose the settings and run the analysis; results are kept for these settings. "
            "A long run can be cancelled and resumed without losing finished evaluations."
        )
        st.stop()

    st.subheader("Per-layer sensitivity")
    left, right = st.columns(2)
    with left:
        # kept per settings: the recipe slider below reruns the page, these tables do not change
        heatmap = engine.figure(
            (*settings, "heatmap"), _build=lambda: figures.sensitivity_heatmap(table)
        )
        st.plotly_chart(heatmap, key="sens_heatmap")
        explain(
            (
                "No evaluation data: each cell prunes only one layer (row) to one sparsity "
                "(column) and shows the share of that layer's weight energy (the sum of w²) the "
                "pruned weights carry, a data-free estimate of the damage. "
                if table.attrs["metric"] == "energy_removed"
                else "Each cell prunes only one layer (row) to one sparsity (column) and shows how "
                f"much the {table.attrs['metric']} gets worse than the dense model's "
                f"({metric_value(table.attrs['metric'], table.attrs['baseline'])}). "
            )
            + "Pale rows are robust; dark cells mark where a layer starts to break. Blank cells "
            "were skipped after the early-stop bound."
        )
    with right:
        st.plotly_chart(
            engine.figure(
                (*settings, "curves"),
                _build=lambda: figures.sparsity_curves(
                    table, metric="drop", by="layer", title="Drop per layer"
                ),
            ),
            key="sens_curves",
        )
        explain(
            "The same numbers as curves, one per layer: flat curves can be pruned far, curves that "
            "rise early belong to layers to spare (often the first and the last)."
        )

    if choice.data is not None:
        st.subheader("Strategies compared on the whole model")
        compare = st.multiselect(
            "Strategies",
            usable,
            default=["global-magnitude", "layer-magnitude", "random"],
            key=Keys.sens_strategies,
        )
        curve_key = ("sweep", choice.model_key, choice.data_spec, tuple(compare), levels, subset)
        grid = (0.0, *levels)

        def compare_strategies(checkpoint, report):
            return sweep(
                choice.model,
                choice.data,
                strategies=compare,
                sparsities=grid,
                run=RunOptions(progress=report, checkpoint=checkpoint, resume=True),
            )

        curves = None
        if compare:
            curves = computed(
                Keys.sens_compare_job,
                curve_key,
                compare_strategies,
                measure=lambda: estimate_sweep(
                    choice.model, choice.data, strategies=compare, sparsities=grid
                ),
                label="Compare",
                running="Sweeping",
            )
        if curves is not None:
            shown = "accuracy" if "accuracy" in curves else "agreement"
            sweep_figure = engine.figure(
                (*curve_key, shown), _build=lambda: figures.sparsity_curves(curves, metric=shown)
            )
            st.plotly_chart(sweep_figure, key="sens_sweep")
            explain(
                "Whole-model pruning at each overall sparsity, no fine-tuning. Global strategies "
                "let robust layers absorb more of the pruning; random is the baseline every "
                "criterion should beat."
            )

    # names this analysis in the recipe builder's keys: a new analysis or target starts from
    # the solver's answer again, and the masks of a recipe are kept per analysis
    analysis = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]

    @st.fragment
    def recipe_builder():
        # A move of the slider (or an edit of the table) reruns only the builder: the sidebar,
        # the analysis and the comparison above it stay as they are.
        st.subheader("Recipe builder")
        target = st.slider(
            "Overall sparsity of the analysed layers", 0.0, 0.95, 0.5, 0.05, key=Keys.sens_target
        )
        try:
            solved = solve(table, target_sparsity=target, max_sparsity=0.95)
        except ValueError as exc:
            st.error(f"The solver could not meet that target: {exc}")
            st.stop()
        solved = replace(solved, layers={k: round(v, DECIMALS) for k, v in solved.layers.items()})
        edited = st.data_editor(
            pd.DataFrame({"layer": list(solved.layers), "sparsity": list(solved.layers.values())}),
            key=f"{Keys.sens_edit}_{analysis}_{target}",
            hide_index=True,
            disabled=["layer"],
            column_config={
                "sparsity": st.column_config.NumberColumn(
                    min_value=0.0, max_value=1.0, step=10**-DECIMALS, format=f"%.{DECIMALS}f"
                )
            },
        )
        per_layer = {
            row.layer: round(float(np.clip(row.sparsity, 0, 1)), DECIMALS)
            for row in edited.itertuples()
        }
        metric_name = table.attrs["metric"]
        baseline = float(table.attrs["baseline"])
        drop = predict_drop(table, per_layer)
        draft = replace(solved, layers=per_layer)
        masks = engine.recipe_masks(
            choice.model_key, f"{analysis}:{target}:{sorted(per_layer.items())}", choice, draft
        )
        flops = engine.flop_table(choice.model_key, _choice=choice)
        dense_flops, effective = engine.effective_flops(flops, masks)
        cols = st.columns(4)
        cols[0].metric(
            "Sparsity (all prunable weights)", f"{draft.overall_sparsity(choice.model):.1%}"
        )
        cols[1].metric("Predicted drop", metric_change(metric_name, drop, sign=False))
        measured = None
        if method == "evaluate":
            measured = engine.evaluate_masks(choice, masks)[metric_name]
            cols[2].metric(
                f"Measured {metric_name}",
                metric_value(metric_name, measured),
                metric_change(metric_name, measured - baseline),
            )
        cols[3].metric(
            "Effective FLOPs",
            f"{effective / 1e6:.2f} M",
            f"{effective / max(dense_flops, 1) - 1:.0%}",
            delta_color="off",
            help=HELP["FLOPs"],
        )
        st.plotly_chart(
            engine.layer_sparsity_figure(
                choice.model_key, masks, title="Recipe: sparsity per layer"
            ),
            key="sens_recipe",
        )
        explain(
            "The solver raises, step by step, the layer whose next level costs the least "
            "predicted drop per removed weight, until the overall target is met. Edit any row to "
            "override it. The predicted drop adds up single-layer drops; the measured value "
            "prunes all layers at once, and the gap between them shows how much layers interact."
        )
        lower_is_better = metric_name in ("loss", "kl")
        recipe = replace(
            draft,
            provenance=replace(
                draft.provenance,
                model=choice.model_key,
                data=choice.data_spec,
                metric=metric_name,
                baseline=baseline,
                predicted=baseline + drop if lower_is_better else baseline - drop,
                measured=measured,
            ),
        )
        text = recipe.dumps()
        st.download_button(
            "Download recipe (YAML)",
            text,
            file_name="recipe.yaml",
            mime="text/yaml",
            key="sens_download",
        )
        with st.expander("The recipe file"):
            st.code(text, language="yaml")

    recipe_builder()
    # outside the fragment: these do not change with the slider or the table
    spec = "MODEL_SPEC" if choice.model_key.startswith("upload:") else choice.model_key
    st.code(
        "import prunelab\n"
        f'bundle = prunelab.io.zoo.load("{spec}")\n'
        'recipe = prunelab.Recipe.load("recipe.yaml")\n'
        "pruned = recipe.apply(bundle.model)  # a pruned copy; bundle.model is unchanged\n",
        language="python",
    )
    st.code(f"prunelab apply recipe.yaml {spec} --out pruned.pt", language="bash")
    explain("Re-apply the recipe to a fresh copy of the model from Python or the command line.")
