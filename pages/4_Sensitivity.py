"""Sensitivity: how far can each layer be pruned? From there, a recipe."""

import streamlit as st

from prunelab import figures
from prunelab.figures.fmt import HELP, metric_change, metric_value
from prunelab.sweeps import interplay_note
from prunelab.ui.errors import error_boundary
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import sensitivity as view
from prunelab.ui.widgets import StrategyChoice, explain, outputs_option

st.set_page_config(page_title="Sensitivity · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()

    st.title("Sensitivity and recipes")
    st.write(
        "Prune one layer at a time, at several sparsities, and measure how much worse the model "
        "gets: robust layers can be pruned hard, fragile ones should be spared. Then let the "
        "solver spread an overall sparsity over the layers by their sensitivity."
    )

    all_layers = view.layer_names(choice)
    usable = view.usable_strategies()
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
    # a language model's evaluation runs a whole context per sample: fewer levels and
    # sequences by default keep the first analysis to a minute, not a quarter of an hour
    lm = choice.bundle.task == "language-model"
    count = cols[2].select_slider(
        "Levels", [3, 5, 9, 19], value=5 if lm else 9, key=Keys.sens_levels
    )
    levels = view.LEVELS[count]
    if choice.data is None:
        subset, early_stop = None, None
        cols[3].caption("No data: the data-free magnitude proxy is used.")
    else:
        size = len(choice.data)
        subset = int(
            cols[3].number_input(
                "Sequences" if lm else "Samples",
                min(16, size),
                size,
                min(size, 32 if lm else 500),
                step=16,
                key=Keys.sens_subset,
                help="Evaluate on the first N samples (a sequence of tokens each, for a language "
                "model): fewer is faster, more is steadier.",
            )
        )
        stop = st.checkbox("Stop a layer once it has lost more than", key=Keys.sens_early_stop)
        early_stop = (
            st.slider("drop bound", 0.01, 0.5, 0.1, 0.01, key="sens_stop_value") if stop else None
        )
    if not layers:
        st.info("Pick at least one layer.")
        st.stop()

    analysis = view.Analysis(choice, tuple(layers), strategy, options, levels, subset, early_stop)
    table = analysis.table()
    if table is None:
        st.info(
            "Choose the settings and run the analysis; results are kept for these settings. "
            "A long run can be cancelled and resumed without losing finished evaluations."
        )
        st.stop()

    st.subheader("Per-layer sensitivity")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(analysis.heatmap(table), key="sens_heatmap")
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
        st.plotly_chart(analysis.curves(table), key="sens_curves")
        explain(
            "The same numbers as curves, one per layer: flat curves can be pruned far, curves that "
            "rise early belong to layers to spare (often the first and the last)."
        )
    if (blocks := analysis.blocks(table)) is not None:
        st.plotly_chart(blocks, key="sens_blocks")
        explain(
            "The same table for a transformer, block by block (rows) and projection by "
            "projection (columns: attention qkv and output, MLP up and down), at the level "
            "nearest 50%: which kind of layer is fragile, and whether the first or the last "
            "blocks are."
        )

    if choice.data is not None:
        st.subheader("Allocations compared")
        allocations = view.Allocations(analysis)
        compared = allocations.table(table)
        if compared is None and st.button("Compare allocations", key=Keys.sens_allocations):
            with st.spinner("Pruning with each allocation and evaluating..."):
                compared = allocations.compute(table)
        if compared is not None:
            st.plotly_chart(
                allocations.figure(compared, table.attrs["metric"]), key="sens_allocations_chart"
            )
            explain(
                "The same overall sparsity spread over the layers in different ways, weights "
                "chosen by magnitude inside each layer, no fine-tuning: uniform, one global "
                "magnitude threshold, LAMP (Lee et al. 2021), ERK (Evci et al. 2020), OWL (Yin et "
                "al. 2023, layers with more activation outliers keep more) and the solver's "
                "(from the sensitivity table above)."
            )

        st.subheader("Strategies compared on the whole model")
        compare = st.multiselect(
            "Strategies",
            usable,
            default=["global-magnitude", "layer-magnitude", "random"],
            key=Keys.sens_strategies,
        )
        comparison = view.Comparison(choice, tuple(compare), levels, subset)
        curves = comparison.table()
        if curves is not None:
            st.plotly_chart(comparison.figure(curves), key="sens_sweep")
            explain(
                "Whole-model pruning at each overall sparsity, no fine-tuning. Global strategies "
                "let robust layers absorb more of the pruning; random is the baseline every "
                "criterion should beat."
            )

    @st.fragment
    def recipe_builder():
        # A move of the slider (or an edit of the table) reruns only the builder: the sidebar,
        # the analysis and the comparison above it stay as they are.
        st.subheader("Recipe builder")
        cols = st.columns([2, 1])
        label = cols[0].radio(
            "Budget", view.budget_kinds(table), horizontal=True, key=Keys.sens_budget
        )
        kind = view.BUDGETS[label]
        evaluations = 1
        if analysis.method == "evaluate":
            evaluations = int(
                cols[1].number_input(
                    "Joint evaluations",
                    1,
                    8,
                    3,
                    key=Keys.sens_evaluations,
                    help="How many times the planner may prune all layers at once and measure: "
                    "each measurement refits the prediction and lets it try another allocation.",
                )
            )
        text, low, high, default, step = view.SLIDERS[kind]
        key = Keys.sens_target if kind == "sparsity" else f"{Keys.sens_target}_{kind}"
        value = st.slider(text, low, high, default, step, key=key)
        with error_boundary():  # an error here leaves the snippets below the builder in place
            solution = view.planned(analysis, table, kind, value, evaluations)
            edited = st.data_editor(
                view.layer_frame(solution.recipe),
                key=f"{Keys.sens_edit}_{view.analysis_id(analysis)}_{kind}_{value}_{evaluations}",
                hide_index=True,
                disabled=["layer"],
                column_config={
                    "sparsity": st.column_config.NumberColumn(
                        min_value=0.0,
                        max_value=1.0,
                        step=10**-view.DECIMALS,
                        format=f"%.{view.DECIMALS}f",
                    )
                },
            )
            draft = view.draft(analysis, table, solution, edited, (kind, value, evaluations))
            metric = draft.metric
            cols = st.columns(5)
            cols[0].metric("Sparsity (all prunable weights)", f"{draft.sparsity:.1%}")
            cols[1].metric(
                "Sum of single-layer drops", metric_change(metric, draft.summed, sign=False)
            )
            cols[2].metric("Predicted drop", metric_change(metric, draft.drop, sign=False))
            if draft.measured is not None:
                cols[3].metric(
                    f"Measured {metric}",
                    metric_value(metric, draft.measured),
                    metric_change(metric, draft.measured - draft.baseline),
                )
            cols[4].metric(
                "Effective FLOPs",
                f"{draft.effective_flops / 1e6:.2f} M",
                f"{draft.effective_flops / max(draft.dense_flops, 1) - 1:.0%}",
                delta_color="off",
                help=HELP["FLOPs"],
            )
            if draft.measured is not None:
                joint = abs(draft.measured - draft.baseline)
                st.info(interplay_note(draft.summed, joint, metric))
            st.plotly_chart(draft.figure(choice), key="sens_recipe")
            explain(
                "The solver raises, step by step, the layer whose next level costs the least "
                "predicted drop per unit of the budget it saves, until the budget is met. Edit "
                "any row to override it. The sum of single-layer drops is what pruning the "
                "layers one at a time costs; the prediction maps that sum (of the layers' KL "
                "divergences, once measured) to the joint drop, fitted to the planner's joint "
                "measurements and kept between chance and the dense value."
            )
            if solution.plan is not None:
                with st.expander("Refinement steps: predicted, then measured", expanded=True):
                    st.plotly_chart(
                        figures.plan_steps(solution.plan.table(), metric=metric),
                        key="sens_plan_steps",
                    )
                    st.dataframe(view.steps_frame(solution.plan), hide_index=True)
                    explain(
                        "Each step prunes all layers at once and measures. Its prediction is "
                        "made before the measurement, from the steps before it; the "
                        "measurement then refits the prediction. Steps after the first move the "
                        "allocation part of the way towards uniform (blend), since single-layer "
                        "measurements over-trust robust layers; the best measured is kept."
                    )
            text = draft.recipe.dumps()
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
    spec = view.reapply_spec(choice)
    st.code(
        "import prunelab\n"
        f'bundle = prunelab.io.zoo.load("{spec}")\n'
        'recipe = prunelab.Recipe.load("recipe.yaml")\n'
        "pruned = recipe.apply(bundle.model)  # a pruned copy; bundle.model is unchanged\n",
        language="python",
    )
    st.code(f"prunelab apply recipe.yaml {spec} --out pruned.pt", language="bash")
    explain("Re-apply the recipe to a fresh copy of the model from Python or the command line.")
