"""Figures of recipe planning: the planner's steps, and allocations compared."""

from __future__ import annotations

import plotly.graph_objects as go

from ..runtime.metrics import LOWER_IS_BETTER
from ._style import _title
from .curves import _frame, _metric_words, _unit

__all__ = ["allocation_comparison", "plan_steps"]


def allocation_comparison(
    table: object, *, metric: str = "accuracy", title: str | None = None
) -> go.Figure:
    """The metric of each allocation at each target sparsity, one line per allocation.

    Args:
        table: A DataFrame with columns ``allocation``, ``sparsity`` and ``metric`` (e.g.
            one-shot accuracy), optionally ``stage`` (``"one-shot"``, ``"fine-tuned"``): each
            stage is drawn as its own line, dashed for one-shot.
        metric: The column to plot.
        title: Main title.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"allocation": ["uniform", "lamp"], "sparsity": [0.5, 0.5],
    ...                    "accuracy": [0.8, 0.9]})
    >>> [t.name for t in allocation_comparison(df).data]
    ['uniform', 'lamp']
    """
    frame = _frame(table, ("allocation", "sparsity", metric))
    scale, unit = _unit(metric, table)
    label = _metric_words(metric, table)
    staged = "stage" in frame.columns
    fig = go.Figure()
    groups = frame.groupby(["allocation", "stage"] if staged else "allocation", sort=False)
    for key, rows in groups:
        name = " ".join(key) if isinstance(key, tuple) else key
        rows = rows.sort_values("sparsity")
        dashed = staged and key[1] == "one-shot"
        fig.add_trace(
            go.Scatter(
                x=(rows["sparsity"] * 100).tolist(),
                y=(rows[metric] * scale).tolist(),
                mode="lines+markers",
                name=name,
                line={"dash": "dash" if dashed else "solid", "width": 3 if "solver" in name else 2},
                hovertemplate=f"{name}<br>sparsity %{{x:.0f}}%<br>{label} "
                f"%{{y:.{'1f' if unit else '3g'}}}{unit}<extra></extra>",
            )
        )
    fig.update_layout(title=_title(title or "Allocations compared", []))
    fig.update_xaxes(title_text="overall sparsity (% of weights zeroed)")
    fig.update_yaxes(title_text=label + (f" ({unit.strip()})" if unit else ""))
    return fig


def plan_steps(steps: object, *, metric: str = "accuracy") -> go.Figure:
    """The planner's steps: summed single-layer drop, predicted and measured joint drop.

    Args:
        steps: :meth:`prunelab.sweeps.Plan.table` (step, summed_drop, predicted_drop,
            measured_drop, chosen).
        metric: The metric the drops are of (accuracy: drawn in points).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"step": [0, 1], "summed_drop": [0.01, 0.02], "chosen": [True, False],
    ...                    "predicted_drop": [0.02, 0.1], "measured_drop": [0.1, 0.12]})
    >>> [t.name for t in plan_steps(df).data]
    ['sum of single-layer drops', 'predicted before measuring', 'measured (joint)']
    """
    frame = _frame(steps, ("step", "summed_drop", "predicted_drop", "measured_drop"))
    scale, unit = _unit(metric, None)
    points = " points" if unit else ""
    change = "rise" if metric in LOWER_IS_BETTER else "drop"  # of a loss or perplexity: a rise
    fig = go.Figure()
    names = {
        "summed_drop": f"sum of single-layer {change}s",
        "predicted_drop": "predicted before measuring",
        "measured_drop": "measured (joint)",
    }
    for column, name in names.items():
        fig.add_trace(
            go.Bar(
                x=[
                    f"step {s}" + (" (chosen)" if c else "")
                    for s, c in zip(
                        frame["step"], frame.get("chosen", [False] * len(frame)), strict=True
                    )
                ],
                y=(frame[column] * scale).tolist(),
                name=name,
                hovertemplate=f"{name}: %{{y:.2f}}{points}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title=_title(
            f"{change.capitalize()} in {_metric_words(metric)}: predicted and measured", []
        ),
    )
    fig.update_yaxes(title_text=f"{change}{' (points)' if unit else ''}")
    return fig
