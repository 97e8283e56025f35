"""Train: win back what pruning lost. Fine-tune with masks kept, or prune gradually."""

from dataclasses import asdict

import pandas as pd
import streamlit as st

from prunelab import figures
from prunelab.analysis import evaluate
from prunelab.core.masks import Masks
from prunelab.core.targets import targets
from prunelab.io import data as data_lib
from prunelab.io.recipes import Recipe
from prunelab.training import (
    Gradual,
    OneShot,
    TrainConfig,
    evaluate_quantized,
    finetune,
    prune_while_training,
    steps_per_epoch,
)
from prunelab.ui import engine, jobs
from prunelab.ui.errors import error_boundary
from prunelab.ui.fmt import percent, points
from prunelab.ui.sidebar import sidebar
from prunelab.ui.state import Keys
from prunelab.ui.widgets import explain

SOURCES = ("Global magnitude at a sparsity", "Masks from the Prune page", "A recipe")
RATES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
BITS = (16, 8, 6, 4, 3, 2)
LIVE_UPDATES = 20  # redraws of the live chart per run

st.set_page_config(page_title="Train · prunelab", layout="wide")
with error_boundary():
    choice = sidebar()
    st.title("Train")
    st.write(
        "One-shot pruning loses accuracy; training wins it back. Fine-tuning trains the pruned "
        "model with its masks kept (pruned weights stay exactly zero); gradual pruning raises the "
        "sparsity step by step while training, so the network adapts on the way."
    )
    if choice.data is None or choice.data_spec is None:
        st.info("Training needs labelled data: pick evaluation data in the sidebar.")
        st.stop()

    @st.cache_resource(max_entries=4, show_spinner="Loading the training split...")
    def train_split(spec: str) -> object:
        return data_lib.load(spec, split="train")

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
            layers = tuple(t.fqn for t in targets(choice.model))
            pruner = engine.pruner(
                choice.model_key,
                choice.data_spec,
                "global-magnitude",
                (),
                layers,
                0,
                _choice=choice,
            )  # scores sorted once: a slider move is a lookup
            return pruner.masks(sparsity=sparsity), f"global-magnitude at {sparsity:.0%}"
        if source == SOURCES[1]:
            masks = st.session_state.get(Keys.masks)
            if masks is None:
                st.info("No masks yet: make some on the Prune page, or pick another source.")
                st.stop()
            problem = engine.masks_misfit(choice, masks)
            if problem:
                st.error(
                    f"The Prune page's masks do not fit this model ({problem}); prune this model "
                    "on the Prune page again, or pick another source."
                )
                st.stop()
            return masks, st.session_state.get(Keys.masks_label, "masks from the Prune page")
        text = st.text_area(
            "Recipe (YAML or JSON, as saved by the Sensitivity page or the CLI)",
            key=Keys.train_recipe,
            height=160,
        )
        if not text.strip():
            st.info("Paste a recipe to continue.")
            st.stop()
        try:
            recipe = Recipe.loads(text)
            calibration = None
            if recipe.build_strategy().needs:
                calibration = engine.calibration(choice.model_key, choice.data_spec, _choice=choice)
            masks = recipe.masks(choice.model, calibration)
        except (ValueError, TypeError) as exc:
            st.error(f"That recipe cannot be used: {exc}")
            st.stop()
        return masks, f"recipe {recipe.strategy} at {masks.sparsity():.0%}"

    def settings() -> tuple[TrainConfig, str, tuple[float, float]]:
        cols = st.columns(5)
        epochs = int(cols[0].number_input("Epochs", 1, 50, 3, key=Keys.train_epochs))
        lr = cols[1].select_slider("Learning rate", RATES, value=0.003, key=Keys.train_lr)
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
        layers = list(dict.fromkeys(t.module_fqn for t in targets(choice.model)))
        st.caption("Freeze layers (their weights stay exactly as they are):")
        boxes = st.columns(min(len(layers), 6) or 1)
        frozen = tuple(
            name
            for i, name in enumerate(layers)
            if boxes[i % len(boxes)].checkbox(name, key=Keys.train_freeze + name)
        )
        config = TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, frozen=frozen)
        return config, kind, window

    def gradual_schedule(sparsity: float, kind: str, window: tuple[float, float], total: int):
        """The gradual run's schedule: from dense at ``window[0]`` to ``sparsity`` at ``window[1]``
        (fractions of the ``total`` optimizer steps); the end is at least one step after the start.
        """
        start = min(round(window[0] * total), total - 1)
        end = max(start + 1, round(window[1] * total))
        return Gradual(0.0, sparsity, start=start, end=end, kind=kind)

    def run(masks: Masks, config: TrainConfig, kind: str, window, report) -> dict:
        """Fine-tune and prune gradually, reporting progress and drawing a live chart."""
        train = train_split(choice.data_spec)
        per_epoch = steps_per_epoch(train, batch_size=config.batch_size)
        total = config.epochs * per_epoch
        sparsity = masks.sparsity()
        schedule = gradual_schedule(sparsity, kind, window, total)
        live = st.empty()
        histories: dict[str, pd.DataFrame] = {}
        rows: list[dict] = []
        every = max(1, total // LIVE_UPDATES)

        def callback(name: str, offset: float):
            def step(progress) -> None:
                rows.append({"run": name, **asdict(progress)})
                report(offset + progress.fraction / 2, f"{name}: {progress.message}")
                if progress.step % every == 0 or progress.step + 1 == progress.total:
                    live.plotly_chart(figures.training_curves(_live(rows)))

            return step

        tuned, histories["fine-tuned"] = finetune(
            choice.model, masks, train, config=config, callback=callback("fine-tuned", 0.0)
        )
        gradual, histories["gradual"] = prune_while_training(
            choice.model,
            train,
            strategy="global-magnitude",
            schedule=schedule,
            config=config,
            callback=callback("gradual", 0.5),
        )
        live.empty()
        test = choice.data
        return {
            "dense": engine.dense_metrics(choice.model_key, choice.data_spec, _choice=choice),
            "one-shot": evaluate(choice.model, test, masks=masks, metrics=("accuracy", "loss")),
            "fine-tuned": evaluate(tuned, test, metrics=("accuracy", "loss")),
            "gradual": evaluate(gradual, test, metrics=("accuracy", "loss")),
            "tuned": tuned,  # kept for the quantized evaluations, which need no new training
            "histories": histories,
            "schedule": schedule,
            "total": total,
            "sparsity": sparsity,
        }

    def _live(rows: list[dict]) -> dict[str, pd.DataFrame]:
        frame = pd.DataFrame(rows)
        return {name: part for name, part in frame.groupby("run", sort=False)}

    def show(result: dict, label: str, key: tuple) -> None:
        dense = result["dense"]["accuracy"]
        accuracies = {
            "one-shot (no training)": result["one-shot"]["accuracy"],
            "fine-tuned": result["fine-tuned"]["accuracy"],
            f"gradual {result['schedule'].kind}": result["gradual"]["accuracy"],
        }
        cols = st.columns(4)
        cols[0].metric("Dense accuracy", percent(dense))
        for col, (name, value) in zip(cols[1:], accuracies.items(), strict=True):
            col.metric(
                name.capitalize(),
                percent(value),
                points(value - dense),
                help="Accuracy on the test split; below it, the change from the dense model.",
            )
        left, right = st.columns(2)
        with left:
            st.plotly_chart(
                figures.compare_bars(
                    accuracies, dense=dense, title=f"Accuracy at {result['sparsity']:.0%} sparsity"
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
        st.plotly_chart(figures.training_curves(result["histories"]), key="train_curves_chart")
        explain(
            "Loss and accuracy of each training batch as training goes on (they are noisy: every "
            "batch is different), one colour per run. The dotted line is the gradual run's "
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
        rows = [
            {
                "weights": "float32 (as trained)",
                "accuracy": percent(result["fine-tuned"]["accuracy"]),
                "loss": f"{result['fine-tuned']['loss']:.4f}",
                "same prediction as float32": percent(1.0),
            }
        ]
        for b in sorted(bits, reverse=True):
            remembered = (*key, "quantized", b)
            measured = engine.remembered(remembered)
            if measured is None:
                measured = engine.remember(
                    remembered, evaluate_quantized(result["tuned"], choice.data, bits=b)
                )
            rows.append(
                {
                    "weights": f"{b} bits",
                    "accuracy": percent(measured["accuracy"]),
                    "loss": f"{measured['loss']:.4f}",
                    "same prediction as float32": percent(measured["agreement"]),
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="train_quantized_table")
        explain(
            "Each kept weight is rounded to one of 2^(bits-1) - 1 levels per sign (one scale per "
            "tensor, symmetric; pruned weights stay exactly zero). Accuracy can stay the same at "
            "fewer bits when the few predictions that change are as often right as wrong: the "
            "loss and the share of predictions unchanged show that the rounding did happen."
        )

    masks, label = pick_masks()
    config, kind, window = settings()
    key = (
        "train",
        choice.model_key,
        choice.data_spec,
        engine.masks_digest(masks),
        config,
        kind,
        window,
    )
    result = engine.remembered(key)
    if st.button("Train", type="primary", key=Keys.train_run) and result is None:
        job = jobs.Job(Keys.train_job, key)
        try:
            # while it runs, a Cancel button stops it at the next progress update
            result = jobs.run(
                job, lambda _, report: run(masks, config, kind, window, report), label="Training"
            )
        except RuntimeError as exc:
            st.error(f"Training failed: {exc}")
            st.stop()
        if result is None:
            st.stop()  # the run reported its error
        engine.remember(key, result)
        st.rerun()  # redraw without the Cancel button: the result is remembered now
    if result is None:
        st.info(
            f"Masks: {label} ({percent(masks.sparsity())} sparse). Press **Train** to fine-tune "
            "them and to compare with one-shot and gradual pruning to the same sparsity."
        )
        st.stop()
    show(result, label, key)
