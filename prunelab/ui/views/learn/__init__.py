"""The Learn page's lessons, one module each: ``lesson1.py`` ... ``lesson8.py``.

Each lesson module has ``TITLE`` (its heading) and ``render()`` (its controls beside its
figure, and its paragraph). :data:`LESSONS` finds them by file name, in number order, so a new
lesson joins the page by being added to this folder. The computations are the engine's
(:mod:`prunelab.teach`); what is heavy goes through :func:`prunelab.ui.cache.lesson_result`, so
that a control move only looks a result up and redraws.

The page calls the sidebar once and hands its :class:`~prunelab.ui.engine.Choice` to the
lessons with :func:`use`; a lesson reads it with :func:`chosen`.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import streamlit as st

from ....figures.fmt import metric_value, points
from ....teach.criteria import at_sparsity
from ...engine import AUTO_EVALUATE_PARAMS, Choice

__all__ = [
    "LESSONS",
    "chosen",
    "curves_allowed",
    "lesson_columns",
    "lesson_modules",
    "numbers_at",
    "sparsity_slider",
    "use",
]

_LESSON = re.compile(r"lesson(\d+)")
_CHOICE = "learn_choice"  # the sidebar's choice for this run (session state, not a widget)
_ALLOWED = "learn_curves_allowed"  # large models whose curves the visitor asked for


def use(choice: Choice) -> None:
    """Give the lessons the sidebar's ``choice`` for this run of the page."""
    st.session_state[_CHOICE] = choice


def chosen() -> Choice:
    """The model and data the sidebar chose (given to the lessons by :func:`use`)."""
    choice = st.session_state.get(_CHOICE)
    if not isinstance(choice, Choice):
        raise RuntimeError("the Learn page calls learn.use(sidebar()) before its lessons")
    return choice


def lesson_columns(paragraph: str) -> list:
    """The lesson's paragraph across the page (read first), then its (controls, figure)
    columns side by side, so that every control sits beside what it changes."""
    st.markdown(paragraph)
    return st.columns([1, 3], gap="medium")


def numbers_at(where, table, metric: str, sparsity: float) -> None:
    """Each curve's ``metric`` at ``sparsity`` as a metric in ``where`` (a column), with its
    change from the dense model (the curve at 0%) in points."""
    dense = at_sparsity(table, metric, 0.0)
    for name, value in at_sparsity(table, metric, sparsity).items():
        where.metric(
            f"{name}: {metric} at {sparsity:.0%}",
            metric_value(metric, value),
            points(value - dense[name]),
        )


def sparsity_slider(key: str, label: str = "Sparsity (share of weights zeroed)", **kw) -> float:
    """A sparsity slider on the lessons' grid (0 to 95% in steps of 5%), 50% at first.

    The value is rounded to the grid, so it is always a level of the lessons' curves.
    """
    value = st.slider(label, 0.0, 0.95, kw.pop("value", 0.5), 0.05, key=key, **kw)
    return round(value, 2)


def curves_allowed(choice: Choice, *, key: str, evaluations: int) -> bool:
    """Whether a lesson may compute its curves now: at once on a small model, on a button
    (remembered for the session) on a large one, where ``evaluations`` passes over the data
    take a while. Never on a language model: the lessons' curves are accuracy of a
    classifier, and a whole-model sweep of a transformer takes minutes."""
    if choice.bundle.task == "language-model":
        st.info(
            f"This lesson's model curves are written for the sample classifiers (accuracy "
            f"against sparsity); {choice.bundle.name} is a language model, so they are not "
            "drawn here. Pick a sample:digits-* model in the sidebar to see them, or see "
            "perplexity against sparsity on the Sensitivity page."
        )
        return False
    if choice.loaded.parameters <= AUTO_EVALUATE_PARAMS:
        return True
    allowed = st.session_state.setdefault(_ALLOWED, set())
    if choice.model_key in allowed:
        return True
    st.info(
        f"{choice.bundle.name} is large: these curves take {evaluations} evaluations over the "
        "data, which may take minutes on this server. They are kept once computed."
    )
    if st.button("Compute the curves", key=key):
        allowed.add(choice.model_key)
        return True
    return False


def lesson_modules() -> list[ModuleType]:
    """The lesson modules of this folder (``lessonN.py``), imported, in order of N."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if match := _LESSON.fullmatch(info.name):
            found.append((int(match.group(1)), info.name))
    return [importlib.import_module(f"{__name__}.{name}") for _, name in sorted(found)]


LESSONS = lesson_modules()  # last: the lessons import the helpers above
