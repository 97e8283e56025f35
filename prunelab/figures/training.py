"""Training (histories and schedules from prunelab.training), and bars comparing runs."""

from __future__ import annotations

import math
from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..runtime.checks import check_count
from ._style import _EMPTY, _KEPT, _title
from .curves import _METRIC_TITLES, _frame

# ----------------------------------------------------------------------------------------
# Training (histories and schedules from prunelab.training)


def _histories(history: object) -> dict[str, object]:
    import pandas as pd

    named = history if isinstance(history, Mapping) else {"": history}
    if not named:
        raise ValueError("history is empty; give a DataFrame or {name: DataFrame}")
    for frame in named.values():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"history must be a DataFrame (or a mapping of them), got {type(frame).__name__}"
            )
        _frame(frame, ("step", "loss", "accuracy"))
    return dict(named)


_RUN_COLOURS = (_KEPT, "#f28e2b", "#59a14f", "#9467bd", "#e15759", "#76b7b2")


def _lower_panel(metric: str) -> tuple[str, str, float, str]:
    """The lower panel for ``metric``: (its title, the eval column, scale, value format)."""
    if metric == "accuracy":
        return "accuracy (%)", "eval_accuracy", 100, ".4g"
    if metric == "perplexity":
        return "perplexity (exp of the loss; lower is better)", "eval_perplexity", 1, ".4g"
    raise ValueError(
        f"unknown metric {metric!r} for training curves; accepted: accuracy, perplexity"
    )


def _lower_values(frame: object, metric: str, scale: float) -> list[float]:
    """The batch values of the lower panel: accuracy, or a language model's perplexity, which
    is exp of the batch's mean token loss (as prunelab.evaluate counts perplexity)."""
    if metric == "perplexity":
        return [math.exp(min(v, 700.0)) for v in frame["loss"].tolist()]
    return (frame[metric] * scale).tolist()


def training_curves(
    history: object, *, metric: str = "accuracy", title: str | None = None
) -> go.Figure:
    """Loss (top) and accuracy or perplexity (bottom) per optimizer step of training runs.

    Each run has one colour in both panels. Batch values are drawn as lines; ``eval_loss`` and
    ``eval_accuracy`` (or ``eval_perplexity``), measured on held-out data after each epoch, as
    diamonds; the sparsity in force as a dotted line (in %) on the lower panel, when it
    changes during the run. A language model's run is read with ``metric="perplexity"``: the
    lower panel is then exp of each batch's mean token loss, lower is better. The
    legend has one entry per kind of mark and run (grouped under the run's name), and says
    only what is drawn: a run without held-out data has no diamond entry.

    Args:
        history: A history from :func:`prunelab.training.loop.finetune` (columns step, loss,
            accuracy and optionally sparsity, eval_accuracy, eval_loss), or ``{name: history}``
            to compare runs.
        metric: The lower panel: ``"accuracy"`` (a classifier) or ``"perplexity"`` (a
            language model).
        title: Main title.

    >>> import pandas as pd
    >>> h = pd.DataFrame({"step": [0, 1], "loss": [2.0, 1.0], "accuracy": [0.2, 0.6],
    ...                   "sparsity": [0.5, 0.9]})
    >>> [(t.name, t.showlegend is not False) for t in training_curves(h).data]
    [('batch values', True), ('batch values', False), ('sparsity', True)]
    """
    lower_title, lower_eval, lower_scale, _ = _lower_panel(metric)
    named = _histories(history)
    # accuracy and sparsity are both percentages and share the lower panel's axis; a
    # perplexity is not, so the sparsity gets its own axis on the right
    own_axis = metric != "accuracy"
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("loss", lower_title),
        specs=[[{}], [{"secondary_y": own_axis}]],
    )
    sparsity_drawn = False
    held_out = False
    for index, (name, frame) in enumerate(named.items()):
        colour = _RUN_COLOURS[index % len(_RUN_COLOURS)]
        run = f"{name}: " if name else ""
        group = {"legendgroup": name or "run", "legendgrouptitle_text": name or None}
        steps = frame["step"].tolist()
        for row, column in ((1, "loss"), (2, metric)):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=frame["loss"].tolist()
                    if row == 1
                    else _lower_values(frame, metric, lower_scale),
                    mode="lines",
                    line={"color": colour},
                    name="batch values",
                    showlegend=row == 1,
                    hovertemplate=f"{run}batch {column}<br>step %{{x}}: %{{y:.4g}}<extra></extra>",
                    **group,
                ),
                row=row,
                col=1,
            )
        legend_entry = True  # one "held-out" entry per run, for both panels
        for column in ("eval_loss", lower_eval):
            if column not in frame:
                continue
            measured = frame.dropna(subset=[column])
            if measured.empty:
                continue
            row, scale = (1, 1) if column == "eval_loss" else (2, lower_scale)
            fig.add_trace(
                go.Scatter(
                    x=measured["step"].tolist(),
                    y=(measured[column] * scale).tolist(),
                    mode="markers",
                    marker={"size": 9, "symbol": "diamond", "color": colour},
                    name="held-out data (each epoch)",
                    showlegend=legend_entry,
                    hovertemplate=f"{run}held-out {column.removeprefix('eval_')}<br>"
                    "step %{x}: %{y:.4g}<extra></extra>",
                    **group,
                ),
                row=row,
                col=1,
            )
            held_out, legend_entry = True, False
        if "sparsity" in frame and frame["sparsity"].nunique() > 1:
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=(frame["sparsity"] * 100).tolist(),
                    mode="lines",
                    line={"dash": "dot", "color": colour},
                    name="sparsity",
                    hovertemplate=f"{run}sparsity<br>step %{{x}}: %{{y:.1f}}%<extra></extra>",
                    **group,
                ),
                row=2,
                col=1,
                **({"secondary_y": True} if own_axis else {}),
            )
            sparsity_drawn = True
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    if metric == "accuracy":
        fig.update_yaxes(title_text="%", range=[0, 100], row=2, col=1)
    else:
        fig.update_yaxes(title_text="perplexity (lower is better)", row=2, col=1)
        if sparsity_drawn:
            fig.update_yaxes(
                title_text="sparsity (%)",
                range=[0, 100],
                tickvals=[0, 25, 50, 75, 100],  # a theme's synced ticks land on 18.9, 41, ...
                showgrid=False,
                row=2,
                col=1,
                secondary_y=True,
            )
    fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    notes = ["lines: each training batch", "diamonds: held-out data" if held_out else None]
    fig.update_layout(title=_title(title or "Training", notes), height=520)
    return fig


def schedule_plot(schedule: object, *, steps: int, title: str | None = None) -> go.Figure:
    """Sparsity vs optimizer step of one schedule, or of several to compare.

    Args:
        schedule: An object with ``sparsity_at(step)`` (:class:`prunelab.training.loop.Gradual`,
            ``Iterative``, ``OneShot``, ``DynamicSparse``), or ``{name: schedule}``.
        steps: Plot steps 0 to ``steps``.
        title: Main title.

    >>> from prunelab.training.schedules import Gradual
    >>> fig = schedule_plot(Gradual(0.0, 0.9, start=0, end=10), steps=20)
    >>> fig.data[0].y[0], fig.data[0].y[-1]
    (0.0, 90.0)
    """
    count = check_count(steps, what="steps")
    named = schedule if isinstance(schedule, Mapping) else {"": schedule}
    fig = go.Figure()
    for name, item in named.items():
        if not callable(getattr(item, "sparsity_at", None)):
            raise TypeError(
                "schedule must have a sparsity_at(step) method (a prunelab.training schedule), "
                f"got {type(item).__name__}"
            )
        label = name or (item.label() if callable(getattr(item, "label", None)) else "schedule")
        xs = list(range(count + 1))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[round(item.sparsity_at(s) * 100, 6) for s in xs],
                mode="lines",
                line={"shape": "hv"},
                name=label,
                hovertemplate=f"{label}<br>step %{{x}}<br>sparsity %{{y:.1f}}%<extra></extra>",
            )
        )
    fig.update_layout(title=_title(title or "Sparsity schedule", []), showlegend=True)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="sparsity (% of weights zeroed)", range=[0, 100])
    return fig


def compare_bars(
    results: Mapping[str, float],
    *,
    dense: float | None = None,
    metric: str = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """One bar per method (one-shot, fine-tuned, gradual, ...), the dense value as a line.

    Args:
        results: ``{label: value}`` in the order to show; accuracy values in [0, 1].
        dense: The dense model's value, drawn as a dashed reference line.
        metric: What the values are (``accuracy`` and ``agreement`` are shown in %).
        title: Main title.

    >>> fig = compare_bars({"one-shot": 0.7, "fine-tuned": 0.97}, dense=0.98)
    >>> list(fig.data[0].x), [round(v, 1) for v in fig.data[0].y]
    (['one-shot', 'fine-tuned'], [70.0, 97.0])
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {label: value}")
    percent = metric in ("accuracy", "agreement")
    scale = 100 if percent else 1
    labels = [str(k) for k in results]
    values = [float(v) * scale for v in results.values()]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=values,
            marker_color=_KEPT,
            text=[f"{v:.1f}%" if percent else f"{v:.3g}" for v in values],
            textposition="outside",
            name=metric,
            hovertemplate="%{x}<br>" + metric + " %{y:.3g}<extra></extra>",
        )
    )
    notes = []
    if dense is not None:
        fig.add_hline(
            y=float(dense) * scale,
            line_dash="dash",
            line_color=_EMPTY,
            annotation_text=f"dense {float(dense) * scale:.1f}{'%' if percent else ''}",
            annotation_position="top left",
        )
        notes.append("dashed: the dense model")
    label = _METRIC_TITLES.get(metric, metric)
    fig.update_layout(title=_title(title or f"{label.capitalize()} by method", notes))
    fig.update_yaxes(
        title_text=label + (" (%)" if percent else ""), range=[0, 105] if percent else None
    )
    return fig
