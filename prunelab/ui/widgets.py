"""Widgets shared by several pages: strategy choice, layer choice, explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import streamlit as st

from ..core.granularity import Channel
from ..core.pruner import left_out
from ..core.strategies import ScoredStrategy, WeightNormChannel, get_strategy, strategy_table
from ..core.targets import resolve_targets
from .engine import Choice
from .fmt import HELP
from .state import Keys

GRANULARITIES = ("unstructured", "channel", "input-channel", "2:4", "1:4", "4:8")


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy name with its options, in a hashable form for caches."""

    name: str
    options: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.name} ({extra})" if extra else self.name


def explain(text: str) -> None:
    """One paragraph under a figure, for learners."""
    st.caption(text)


def strategy_picker(*, key: str = Keys.strategy, label: str = "Strategy") -> StrategyChoice:
    """Strategy from the registry (with its description) and the options it takes."""
    table = strategy_table().set_index("name")
    names = list(table.index)
    name = st.selectbox(
        label,
        names,
        index=names.index("global-magnitude"),
        key=key,
        help="How weights are scored and which are removed. Magnitude: the size |w|. "
        f"{HELP['Taylor']} {HELP['Wanda']}",
    )
    row = table.loc[name]
    # the description goes below the menu, where it wraps, not into it (cut off in the sidebar)
    st.caption(
        f"{row['description']} (scope **{row['scope']}**, granularity **{row['granularity']}**"
        + (f", needs **{row['needs']}** from the data" if row["needs"] != "-" else "")
        + ")"
    )
    default = get_strategy(name)
    options: list[tuple[str, object]] = []
    if name == "n:m":
        pattern = st.selectbox("N:M pattern", ("2:4", "1:4", "4:8"), key=f"{key}_nm")
        options.append(("granularity", pattern))
    elif isinstance(default, ScoredStrategy):
        current = str(default.granularity)
        choices = list(dict.fromkeys((current, *GRANULARITIES)))
        granularity = st.selectbox(
            "Granularity",
            choices,
            key=f"{key}_{name}_granularity",
            help="What is kept or pruned together: single weights, whole output channels, "
            "whole input channels, or N of every M consecutive weights.",
        )
        if granularity != current:
            options.append(("granularity", granularity))
    if isinstance(default, WeightNormChannel):
        p = st.radio("Norm", (1, 2), horizontal=True, key=f"{key}_p", format_func=lambda v: f"L{v}")
        options.append(("p", p))
    return StrategyChoice(name=name, options=tuple(options))


def layer_picker(choice: Choice, strategy: StrategyChoice) -> tuple[str, ...]:
    """Which target tensors to prune (all that the strategy can prune, by default)."""
    chosen_strategy = get_strategy(strategy.name, **dict(strategy.options))
    all_targets = choice.loaded.prunable
    reasons = {t.fqn: chosen_strategy.unsupported(t) for t in all_targets}
    fitting = [fqn for fqn, reason in reasons.items() if reason is None]
    granularity = dict(strategy.options).get("granularity", "")
    chosen = st.multiselect(
        "Layers to prune",
        [t.fqn for t in all_targets],
        default=fitting,
        # one selection per model and pattern: another model's layer names would not fit
        key=f"{Keys.layers}_{choice.model_key}_{strategy.name}_{granularity}",
        help="Weights of Linear, Conv and RNN layers. Biases and norms are not pruned.",
    )
    left_out = {fqn: reason for fqn, reason in reasons.items() if reason is not None}
    if left_out:
        with st.expander(
            f"{len(left_out)} layer(s) left out by default: {strategy.name} cannot prune them"
        ):
            for fqn, reason in left_out.items():
                st.markdown(f"- `{fqn}`: {reason}")
    if not chosen:
        st.info("Pick at least one layer to prune.")
        st.stop()
    return tuple(chosen)


def outputs_option(
    choice: Choice, strategy: StrategyChoice, layers: Sequence[str], *, key: str
) -> StrategyChoice:
    """For output-channel strategies: one line naming the output layer that is left out and
    why, and a box to prune it too (the strategy's ``prune_outputs`` option)."""
    chosen = get_strategy(strategy.name, **dict(strategy.options))
    if not isinstance(chosen.granularity, Channel):
        return strategy
    include = bool(st.session_state.get(key, False))
    skipped = None
    if not include:
        chosen_targets = resolve_targets(choice.model, list(layers))
        skipped = left_out(choice.model, chosen, chosen_targets)
        if skipped.fqns:
            st.caption(f"{skipped.why}.")
    label = "Prune the model's output layer too"
    st.checkbox(
        label,
        key=key,
        help="Its output channels are the model's outputs (the classes): pruning one deletes "
        "that output outright, whatever the data says.",
    )
    if skipped is not None and skipped.fqns and len(skipped.fqns) == len(chosen_targets):
        # every chosen layer is an output layer: say what to do instead of a failed prune
        st.info(
            f"Nothing to prune with {strategy.name}: {skipped.why}. Pick other layers, or tick "
            f"**{label}** in the sidebar."
        )
        st.stop()
    if not include:
        return strategy
    return replace(strategy, options=(*strategy.options, ("prune_outputs", True)))
