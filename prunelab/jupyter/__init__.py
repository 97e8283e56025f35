"""Jupyter front end: the Prune page's lab as a notebook widget.

``explore(model, data)`` shows the controls (strategy and its options, layers, sparsity or
threshold) beside the numbers and figures they change, driven by the same engine as the app:
scores sorted once, masks looked up on each slider move, metrics through the evaluation's cached
dense outputs, and the same ``prunelab.figures``. Like ``cli`` and ``ui`` it sits on top of the
engine; it never imports streamlit.
"""

from .._lazy import lazy_names

_NAMES = {
    "Explorer": ".explorer",
    "Setup": ".explorer",
    "explore": ".explorer",
}

__getattr__, __dir__ = lazy_names(__name__, _NAMES)
__all__ = list(_NAMES)
