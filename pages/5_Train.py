"""Train: win back what pruning lost. Fine-tune with masks kept, or prune gradually."""

import streamlit as st

from prunelab import figures
from prunelab.core.masks import Masks
from prunelab.figures.fmt import metric_name, metric_value, percent
from prunelab.training import OneShot, TrainConfig
from prunelab.training.config import LM_CONFIG, LM_SEQUENCES
from prunelab.ui import cache
from prunelab.ui.errors import error_boundary
from prunelab.ui.quality import change_of, inverse_delta
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.views import train as view
from prunelab.ui.views.train import (
    BITS,
    LM_SUFFIX,
    RATES,
    SOURCES,
    Plan,
)
from prunelab.ui.widgets import explain

st.set_page_config(page_title="Train · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Train")
    st.write(
        "One-shot pruning loses accuracy; training wins it back. Fine-tuning trains the pruned "
        "model with its masks kept (pruned weights stay exactly zero); gradual pruning raises the "
        "sparsity step by step while training, so the network adapts on the way."
    )
    lm = view.is_language_model(choice)
    if lm:
        st.caption(
            "A language model learns its next tokens here and is judged by perplexity on the "
            "test split (lower is better); pruning makes it rise, training lowers it again."
        )
    if choice.data is None or choice.data_spec is None:
        st.info("Training needs labelled data: pick evaluation data in the sidebar.")
        st.stop()

    def pick_masks() -> tuple[Masks, str]:
        """The masks to train with and a label; stops the page with an explanation if unusable."""
        source = st.radio("Masks", SOURCES, horizontal=True, key=Keys.train_source)
        if source == SOURCES[0]:
            sparsity = st.slider(
                "Sparsity (fraction of weights zeroed)",
                0.0,
                0.99,
                0.9,
                0.01,
                key=Keys.train_sparsity,
            )
            return view.global_masks(choice, sparsity)
        if source == SOURCES[1]:
            picked = view.prune_page_masks(choice)
            if picked is None:
                st.info("No masks yet: make some on the Prune page, or pick another source.")
                st.stop()
            return picked
        text = st.text_area(
            "Recipe (YAML or JSON, as saved by the Sensitivity page or the CLI)",
            key=Keys.train_recipe,
            height=160,
        )
        if not text.strip():
            st.info("Paste a recipe to continue.")
            st.stop()
        return view.recipe_masks(choice, text)

    def settings() -> Plan:
        defaults = LM_CONFIG if lm else TrainConfig()
        # a language model keeps its own epochs and rate: a classifier's 3 epochs at 0.003,
        # carried over when the model changes, would train it for minutes
        own = LM_SUFFIX if lm else ""
        cols = st.columns(5)
        epochs = int(
            cols[0].number_input("Epochs", 1, 50, defaults.epochs, key=Keys.train_epochs + own)
        )
        lr = cols[1].select_slider(
            "Learning rate", RATES, value=defaults.lr, key=Keys.train_lr + own
        )
        optimizer = cols[2].selectbox("Optimizer", ("adam", "sgd"), key=Keys.train_optimizer)
        kind = cols[3].selectbox(
            "Gradual schedule",
            ("cubic", "linear"),
            key=Keys.train_kind,
            help="Cubic (Zhu & Gupta) prunes fast at first and slowly near the end.",
        )
        start, end = cols[4].slider(
            "Gradual: start and end",
            0,
            100,
            (0, 67),
            5,
            key=Keys.train_window,
            format="%d%%",
            help="When the gradual run starts pruning and when it reaches the final sparsity, in "
            "percent of the whole training (0% = first step, 100% = last step).",
        )
        window = (start / 100, end / 100)
        sequences = None
        if lm:  # a pass over all the text takes minutes on a CPU: its first sequences
            available = len(cache.train_split(choice.data_spec))
            sequences = int(
                st.number_input(
                    "Training sequences",
                    min(16, available),
                    available,
                    min(LM_SEQUENCES, available),
                    16,
                    key=Keys.train_sequences,
                    help=f"The first sequences of the training split, {defaults.batch_size} "
                    f"per optimizer step (of {available:,}).",
                )
            )
        layers = view.freezable_layers(choice)
        st.caption("Freeze layers (their weights stay exactly as they are):")
        boxes = st.columns(min(len(layers), 6) or 1)
        frozen = tuple(
            name
            for i, name in enumerate(layers)
            if boxes[i % len(boxes)].checkbox(name, key=Keys.train_freeze + name)
        )
        config = TrainConfig(
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            frozen=frozen,
            batch_size=defaults.batch_size,
        )
        return Plan(config, kind, window, sequences)

    def show(result: dict, label: str, key: tuple) -> None:
        metric = result["metric"]
        dense = result["dense"][metric]
        values = view.headline_values(result)
        cols = st.columns(4)
        cols[0].metric(f"Dense {metric}", metric_value(metric, dense))
        change = "rise" if metric == "perplexity" else "change"
        for col, (name, value) in zip(cols[1:], values.items(), strict=True):
            col.metric(
                name.capitalize(),
                metric_value(metric, value),
                change_of(metric, value, dense),
                delta_color=inverse_delta(result["dense"]),
                help=f"{metric_name(metric).capitalize()} on the test split; below it, the "
                f"{change} from the dense model.",
            )
        left, right = st.columns(2)
        with left:
            st.plotly_chart(
                figures.compare_bars(
                    values,
                    dense=dense,
                    metric=metric,
                    title=f"{metric_name(metric).capitalize()} at {result['sparsity']:.0%} "
                    "sparsity",
                ),
                key="train_compare_chart",
            )
            explain(
                f"The same final sparsity ({label}) three ways, measured on the test split. "
                "One-shot prunes and stops; fine-tuning trains the pruned model with its masks "
                "kept; gradual pruning starts dense and prunes (global magnitude) a little more at "
                "each step of the schedule while it trains, so the network adapts as it goes."
            )
        schedule = result["schedule"]
        with right:
            st.plotly_chart(
                figures.schedule_plot(
                    {
                        "one-shot / fine-tune": OneShot(result["sparsity"]),
                        f"gradual {schedule.kind}": schedule,
                    },
                    steps=result["total"],
                ),
                key="train_schedule_chart",
            )
            explain(
                "Sparsity in force at each optimizer step. One-shot and fine-tuning are at the "
                "final sparsity from the first step; the gradual run is dense until step "
                f"{schedule.start} and reaches the final sparsity at step {schedule.end} of "
                f"{result['total']}; the steps after that are left to recover."
            )
        st.plotly_chart(
            figures.training_curves(result["histories"], metric=metric),
            key="train_curves_chart",
        )
        shown = "perplexity (exp of the loss, lower is better)" if lm else "accuracy"
        explain(
            f"Loss and {shown} of each training batch as training goes on (they are noisy: "
            "every batch is different), one colour per run. The dotted line is the gradual run's "
            "sparsity: its loss rises each time more weights go, and falls again as the remaining "
            "weights take over."
        )
        quantized(result, key)

    def quantized(result: dict, key: tuple) -> None:
        """The fine-tuned model with its kept weights rounded to the chosen numbers of bits."""
        st.subheader("Fewer bits for the kept weights")
        bits = st.multiselect(
            "Quantize the fine-tuned model's kept weights to",
            BITS,
            default=[8, 4],
            key=Keys.train_bits,
            format_func=lambda b: f"{b} bits",
        )
        rows = view.quantized_rows(choice, result, key, bits)
        st.dataframe(rows, hide_index=True, key="train_quantized_table")
        why = (
            "A language model's predictions are its next tokens, one per position; perplexity "
            "is exp of the loss, lower is better."
            if lm
            else "Accuracy can stay the same at fewer bits when the few predictions that change "
            "are as often right as wrong: the loss and the share of predictions unchanged show "
            "that the rounding did happen."
        )
        explain(
            "Each kept weight is rounded to one of 2^(bits-1) - 1 levels per sign (one scale per "
            f"tensor, symmetric; pruned weights stay exactly zero). {why}"
        )

    masks, label = pick_masks()
    plan = settings()
    key = view.result_key(choice, masks, plan)
    result = cache.remembered(key)
    if st.button("Train", type="primary", key=Keys.train_run) and result is None:
        view.train(choice, key, masks, plan)  # then the page is drawn again
    if result is None:
        st.info(
            f"Masks: {label} ({percent(masks.sparsity())} sparse). Press **Train** to fine-tune "
            "them and to compare with one-shot and gradual pruning to the same sparsity."
        )
        st.stop()
    show(result, label, key)
