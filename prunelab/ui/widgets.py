"""Widgets shared by several pages: strategy choice, layer choice, explanations.

A strategy's controls come from the strategy (:func:`prunelab.core.strategies.strategy_options`),
not from its name: a strategy a user registers gets its menus, boxes and checkboxes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import streamlit as st

from ..core.granularity import Channel
from ..core.options import Option
from ..core.pruner import left_out
from ..core.strategies import Strategy, get_strategy, strategy_options, strategy_table
from ..core.targets import resolve_targets
from ..figures.fmt import HELP
from .engine import Choice
from .state import Keys

__all__ = [
    "StrategyChoice",
    "explain",
    "layer_picker",
    "option_control",
    "outputs_option",
    "strategy_picker",
]


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy name with its options, in a hashable form for caches."""

    name: str
    options: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options)
        return f"{self.name} ({extra})" if extra else self.name

    def build(self) -> Strategy:
        """The strategy these choices make."""
        return get_strategy(self.name, **dict(self.options))


def explain(text: str) -> None:
    """One paragraph under a figure, for learners."""
    st.caption(text)


def option_control(option: Option, *, key: str) -> object:
    """The control for one option of a strategy, drawn from its description: a radio for two
    choices, a menu for more, a checkbox for a bool, a number box, or a text box."""
    help_text = option.help or None
    if option.choices:
        choices = list(option.offered())
        index = choices.index(option.default)
        common = {"index": index, "key": key, "format_func": option.show, "help": help_text}
        if len(choices) <= 2:
            return st.radio(option.label, choices, horizontal=True, **common)
        return st.selectbox(option.label, choices, **common)
    if isinstance(option.default, bool):
        return st.checkbox(option.label, value=option.default, key=key, help=help_text)
    if isinstance(option.default, (int, float)):
        low, high, step = option.bounds()
        return st.number_input(
            option.label,
            min_value=low,
            max_value=high,
            value=option.default,
            step=step,
            key=key,
            help=help_text,
        )
    return st.text_input(option.label, value=str(option.default), key=key, help=help_text)


def strategy_picker(*, key: str = Keys.strategy, label: str = "Strategy") -> StrategyChoice:
    """Strategy from the registry (with its description) and a control for each option it
    leaves to choose; only the options that differ from the default are passed on."""
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
    offered = strategy_options(name)
    chosen = {o.name for o in offered}
    # what the options do not offer is fixed: said below the menu, where it wraps (a long
    # description would be cut off inside the menu in the sidebar)
    fixed = [f"{what} **{row[what]}**" for what in ("scope", "granularity") if what not in chosen]
    if row["needs"] != "-":
        fixed.append(f"needs **{row['needs']}** from the data")
    st.caption(f"{row['description']}" + (f" ({', '.join(fixed)})" if fixed else ""))
    options: list[tuple[str, object]] = []
    for option in offered:
        value = option_control(option, key=f"{key}_{name}_{option.name}")
        if value != option.default:
            options.append((option.name, value))
    return StrategyChoice(name=name, options=tuple(options))


def layer_picker(choice: Choice, strategy: StrategyChoice) -> tuple[str, ...]:
    """Which target tensors to prune (all that the strategy can prune, by default)."""
    chosen_strategy = strategy.build()
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
    chosen = strategy.build()
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
