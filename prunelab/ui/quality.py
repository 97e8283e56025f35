"""The one number that stands for a model's quality on the page: accuracy for a classifier,
perplexity for a language model (lower is better), told apart by the metrics measured.

>>> headline({"perplexity": 25.9, "accuracy": 0.3})
('Perplexity', '25.90')
>>> change({"perplexity": 30.0}, {"perplexity": 25.0})
'+5.00 (+20.0%)'
"""

from __future__ import annotations

from ..figures.fmt import metric_value, points

__all__ = ["LM_NOTE", "change", "headline", "headline_name", "inverse_delta", "lm_note"]

LM_NOTE = (
    "Perplexity is exp(mean loss per next token): how many tokens the model is as unsure "
    "between as if it picked uniformly; lower is better. Agreement is the share of positions "
    "where the pruned model's most likely next token is the dense model's; KL divergence is "
    "how far their next-token distributions differ."
)


def headline_name(metrics: dict[str, float]) -> str | None:
    """``perplexity`` when it was measured (token data), else ``accuracy`` when there are
    labels, else None (fidelity only)."""
    for name in ("perplexity", "accuracy"):
        if name in metrics:
            return name
    return None


def headline(metrics: dict[str, float]) -> tuple[str, str] | None:
    """(label, value) of the headline metric, formatted for its kind: perplexity is not a
    share, so it is never written as a percent."""
    name = headline_name(metrics)
    if name is None:
        return None
    value = metrics[name]
    return (name.capitalize(), metric_value(name, value))


def change(pruned: dict[str, float], dense: dict[str, float]) -> str | None:
    """The headline's change from dense: points of accuracy, or perplexity's difference and
    ratio."""
    name = headline_name(pruned)
    if name is None or name not in dense:
        return None
    return change_of(name, pruned[name], dense[name])


def change_of(name: str, value: float, dense: float) -> str:
    """``value``'s change from ``dense``: points of a share, perplexity's difference and
    ratio (a perplexity is not a share, and a rise of 3 means more at 20 than at 200)."""
    if name == "perplexity":
        return f"{value - dense:+.2f} ({value / dense - 1:+.1%})"
    return points(value - dense)


def inverse_delta(metrics: dict[str, float]) -> str:
    """``delta_color`` for st.metric: a rise of perplexity is bad, so it shows red."""
    return "inverse" if headline_name(metrics) == "perplexity" else "normal"


def lm_note(metrics: dict[str, float]) -> str | None:
    """What the language-model metrics mean, when they are the ones shown."""
    return LM_NOTE if headline_name(metrics) == "perplexity" else None
