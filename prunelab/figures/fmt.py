"""One way to write numbers in every front end (app pages, the Jupyter explorer): shares as
percent, their changes in points, counts short.

No streamlit: the app and the notebook widgets read the same words and numbers.
"""

from __future__ import annotations

from ..runtime.memory import format_count
from .curves import SHARE_METRICS


def percent(value: float) -> str:
    """A share in [0, 1] as a percent with two decimals: ``percent(0.98) == "98.00%"``."""
    return f"{value:.2%}"


def count(n: int) -> str:
    """A count for a metric: exact below a million (``9,930``), else short (``11.7M``)."""
    return f"{n:,}" if n < 1_000_000 else format_count(n)


def points(change: float, *, sign: bool = True) -> str:
    """A change of a share, in percentage points: ``points(-0.2089) == "-20.89 points"``.

    Not "%": a drop from 98% to 77% is 21 points, which "-21%" would read as a relative drop.
    """
    return f"{change * 100:{'+' if sign else ''}.2f} points"


def metric_value(metric: str, value: float) -> str:
    """A metric as the app writes it: shares (accuracy, agreement) in percent, perplexity as
    a plain number with two decimals (``metric_value("perplexity", 12.3456) == "12.35"``)."""
    if metric in SHARE_METRICS:
        return percent(value)
    return f"{value:.2f}" if metric == "perplexity" else f"{value:.4f}"


def metric_change(metric: str, change: float, *, sign: bool = True) -> str:
    """A change of a metric: shares in percentage points, others as plain numbers."""
    if metric in SHARE_METRICS:
        return points(change, sign=sign)
    digits = 2 if metric == "perplexity" else 4
    return f"{change:{'+' if sign else ''}.{digits}f}"


def metric_name(metric: str) -> str:
    """A metric's name as a label: ``metric_name("kl") == "KL"``; perplexity says which way
    is better, since every other headline number (accuracy) is better higher."""
    names = {"kl": "KL", "perplexity": "perplexity (lower is better)"}
    return names.get(metric, metric)


# Short explanations shown on hover (``help=``) wherever the app uses these words.
HELP = {
    "fqn": "The layer's full name in the model (its fully qualified parameter name), as "
    "PyTorch's model.named_parameters() lists it, e.g. conv1.weight.",
    "agreement": "Share of inputs on which the pruned model predicts the same class as the "
    "dense one. Needs no labels.",
    "perplexity": "A language model's perplexity: exp of its mean cross-entropy per token on "
    "the text, i.e. how many tokens it hesitates between on average. Lower is better; the "
    "dense model's is the baseline.",
    "KL": "Kullback-Leibler divergence of the pruned model's output probabilities from the "
    "dense model's: 0 when they are identical, larger the more they differ. Needs no labels.",
    "FLOPs": "Floating-point operations (multiplies and adds) of one forward pass. Effective "
    "FLOPs count only the ones with a kept weight: what a sparse kernel could skip to, not "
    "what a dense kernel does.",
    "APoZ": "Average Percentage of Zeros: how often a channel outputs exactly 0. A channel "
    "that is almost always 0 can be removed without changing much.",
    "IoU": "Intersection over union of the kept weights: kept by both divided by kept by "
    "either. 1 means identical masks.",
    "Wanda": "Wanda (pruning by Weights AND Activations): a weight's score is |w| times the "
    "size of the input it multiplies, measured on a few batches of data.",
    "Taylor": "Taylor (magnitude x gradient): a weight's score is |w x dL/dw|, a first-order "
    "estimate of how much the loss changes without it; needs a few labelled batches.",
}
