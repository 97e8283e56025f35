"""``explore(model, data)``: the Prune page as a widget in a notebook.

The controls are ipywidgets (sliders, menus); the figures are plotly ``FigureWidget``\\ s, which
plotly (6 and later) builds on anywidget. The work behind them is the app's: a
:class:`prunelab.Pruner` scores and sorts once per strategy and layer choice (a few are kept), a
slider move looks the new masks up, and metrics come from :func:`prunelab.evaluate`, whose
cached dense outputs leave one masked forward pass per move. Only the figure on view is rebuilt,
in place; the others catch up when their tab is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import ipywidgets as widgets
import torch
from torch import nn

from ..analysis.evaluation import evaluate
from ..analysis.flops import flops_by_layer
from ..core.calibration import Calibration
from ..core.granularity import Channel
from ..core.masks import Masks
from ..core.options import Option
from ..core.pruner import Pruner
from ..core.strategies import (
    Strategy,
    get_strategy,
    list_strategies,
    strategy_options,
    strategy_table,
)
from ..core.targets import targets
from ..io import data as data_lib
from ..io import zoo
from ..io.recipes import Provenance, Recipe
from ..runtime.batches import iter_batches
from ..runtime.metrics import headline_metric
from .live import Card, cards_html, metric_cards, note
from .views import Shown, Views

__all__ = ["Explorer", "Setup", "explore"]

CALIBRATION_BATCHES = 4  # batches of 64 for data-driven scores, as in the app
MAX_PRUNERS = 8  # prepared strategies kept: switching back to one does not sort again
MAX_EVALUATIONS = 256  # metrics per (strategy, layers, setting): a slider moved back is free
LABEL_WIDTH, CONTROL_WIDTH = "96px", "350px"  # the controls' column, beside the outputs


@dataclass(frozen=True)
class Setup:
    """Where an :class:`Explorer` starts, and what its recipes name.

    Attributes:
        strategy: Registered strategy name shown first.
        sparsity: Starting sparsity (fraction zeroed).
        example_input: One input batch for FLOP counts (None: no FLOPs shown).
        seed: Seed for random strategies.
        model_spec: The model's spec, for a recipe's provenance.
        data_spec: The data's spec, for a recipe's provenance.
    """

    strategy: str = "global-magnitude"
    sparsity: float = 0.5
    example_input: torch.Tensor | None = None
    seed: int = 0
    model_spec: str | None = None
    data_spec: str | None = None


def explore(
    model: nn.Module | zoo.ModelBundle | str,
    data: object | None = None,
    *,
    strategy: str = "global-magnitude",
    sparsity: float = 0.5,
    example_input: torch.Tensor | None = None,
    seed: int = 0,
) -> Explorer:
    """An interactive pruning lab for ``model``: show it as a cell's last line.

    Pick a strategy, its options and the layers; move the sparsity or threshold slider; read
    the metrics against the dense model and the figures of one layer. Take the current masks
    with ``.masks`` and a recipe with ``.recipe()`` in the next cell.

    Args:
        model: A model in eval mode, a :class:`prunelab.zoo.ModelBundle`, or a model spec
            (``"sample:digits-cnn"``). The model is never modified.
        data: Evaluation data (anything :func:`prunelab.evaluate` reads, or a data spec such
            as ``"sample:digits"``, whose test split is used). None: no accuracy or fidelity,
            and no data-driven strategies.
        strategy: The strategy shown first.
        sparsity: The sparsity shown first.
        example_input: One input for FLOP counts (default: the bundle's, else the data's first
            sample).
        seed: Seed for random strategies.

    >>> import torch.nn as nn
    >>> lab = explore(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), sparsity=0.5)
    >>> round(lab.masks.sparsity(), 2)
    0.5
    >>> lab.sparsity_slider.value = 0.75  # what moving the slider does
    >>> round(lab.masks.sparsity(), 2)
    0.75
    """
    model_spec = data_spec = None
    if isinstance(model, str):
        model = zoo.load(model)
    if isinstance(model, zoo.ModelBundle):
        model_spec = model.spec
        if example_input is None:
            example_input = model.example_input()
        model = model.model
    if isinstance(data, str):
        data_spec, data = data, data_lib.load(data, split="test")
    elif data is not None:
        name = getattr(data, "name", None)  # datasets loaded by spec carry it
        data_spec = name if isinstance(name, str) else None
    if example_input is None and data is not None:
        example_input = next(iter_batches(data, batch_size=1, limit=1)).inputs
    setup = Setup(strategy, sparsity, example_input, seed, model_spec, data_spec)
    return Explorer(model, data, setup=setup)


class Explorer:
    """The widget :func:`explore` returns; its controls are attributes, to drive from code.

    Attributes:
        widget: The whole widget (a notebook shows it when the Explorer is a cell's value).
        strategy_menu, layers_menu, drive, sparsity_slider, threshold_slider, focus_menu:
            The controls (ipywidgets); setting a ``.value`` acts as a person would.
        option_widgets: The current strategy's option controls, by option name.
        figure_widgets: The plotly FigureWidgets by view (``"layers"``, ``"weights"``,
            ``"histogram"``, ``"mask"``).
        cards: The metrics (an HTML widget).
        status: What went wrong or was left out, in a sentence ("" when nothing).
    """

    def __init__(self, model: nn.Module, data: object | None, *, setup: Setup) -> None:
        self._model, self._data, self._setup = model, data, setup
        self._targets = {t.fqn: t for t in targets(model)}
        if not self._targets:
            raise ValueError("the model has no prunable weights (Linear, Conv or RNN layers)")
        self._pruners: OrderedDict = OrderedDict()
        self._evaluations: OrderedDict = OrderedDict()
        self._calibration: Calibration | None = None
        self._dense = evaluate(model, data) if data is not None else None
        x = setup.example_input
        self._flops = flops_by_layer(model, example_input=x) if x is not None else None
        self._busy = 0
        self._pruner: Pruner | None = None
        self._key: tuple | None = None
        self._masks: Masks | None = None
        self._metrics: dict[str, float] = {}
        self._setting: tuple = ()
        self._build_widgets()
        with self._quiet():
            self._show_options()
            self._reset_layers()
        self._prepare()

    # -- what the next cell takes ------------------------------------------------------------

    @property
    def masks(self) -> Masks:
        """The masks the controls show now."""
        if self._masks is None:
            raise ValueError(f"no masks: {self.status.value or 'the controls are not set'}")
        return self._masks

    @property
    def pruner(self) -> Pruner:
        """The prepared :class:`prunelab.Pruner` behind the sliders."""
        if self._pruner is None:
            raise ValueError(f"no pruner: {self.status.value}")
        return self._pruner

    @property
    def strategy(self) -> Strategy:
        """The strategy with the chosen options."""
        return self.pruner.strategy

    @property
    def metrics(self) -> dict[str, float]:
        """The current masks' metrics (empty without data)."""
        return dict(self._metrics)

    @property
    def dense_metrics(self) -> dict[str, float]:
        """The dense model's metrics (empty without data)."""
        return dict(self._dense or {})

    def recipe(self) -> Recipe:
        """The recipe that reproduces the current masks on a fresh model.

        Raises:
            ValueError: For seeded random masks with a seed other than 0 (recipes carry no
                seed, so they could not give the same masks back).
        """
        if self._setup.seed != 0:
            raise ValueError(
                f"recipes carry no seed, so masks made with seed={self._setup.seed} cannot be "
                "saved as one; explore with seed=0 to save a recipe"
            )
        # the headline metric: perplexity on token data (a language model), else accuracy
        metric = headline_metric(self._data) if self._metrics else None
        provenance = Provenance(
            model=self._setup.model_spec,
            data=self._setup.data_spec,
            metric=metric,
            baseline=(self._dense or {}).get(metric),
            measured=self._metrics.get(metric),
            left_out=self.pruner.left_out.note,
        )
        return Recipe.from_masks(self.masks, self.pruner.strategy, provenance=provenance)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- the widgets ---------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        wide = {"description_width": LABEL_WIDTH}
        full = _control_layout

        names = list_strategies()
        start = self._setup.strategy if self._setup.strategy in names else names[0]
        self._table = strategy_table().set_index("name")
        self.strategy_menu = widgets.Dropdown(
            options=names, value=start, description="Strategy", style=wide, layout=full()
        )
        self.about = widgets.HTML(layout=full())
        self.options_box = widgets.VBox()
        self.option_widgets: dict[str, widgets.ValueWidget] = {}
        self.outputs_box = widgets.Checkbox(
            value=False, description="Prune the model's output layer too", indent=False
        )
        self.layers_menu = widgets.SelectMultiple(
            options=list(self._targets),
            description="Layers",
            rows=min(6, len(self._targets)),
            style=wide,
            layout=full(),
        )
        self.drive = widgets.ToggleButtons(
            options=["sparsity", "threshold"],
            description="Drive by",
            style={**wide, "button_width": "100px"},
        )
        self.sparsity_slider = widgets.FloatSlider(
            value=self._setup.sparsity,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Sparsity",
            readout_format=".2f",
            continuous_update=False,  # one update per release, as the app's slider
            style=wide,
            layout=full(),
        )
        self.threshold_slider = widgets.FloatSlider(
            description="Threshold",
            readout_format=".4g",
            continuous_update=False,
            style=wide,
            layout=full(),
        )
        self.implied = widgets.HTML(layout=full())
        self.cards = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.status = widgets.HTML()
        self.views = Views(self._model, self._targets)
        self.focus_menu = self.views.focus_menu
        self.figure_widgets = self.views.figure_widgets
        self.tabs = self.views.tabs
        controls = widgets.VBox(
            [
                widgets.HTML("<b>Strategy</b>"),
                self.strategy_menu,
                self.about,
                self.options_box,
                self.layers_menu,
                self.outputs_box,
                widgets.HTML("<b>Masks</b>"),
                self.drive,
                self.sparsity_slider,
                self.threshold_slider,
                self.implied,
            ],
            layout=widgets.Layout(flex="0 0 360px", margin="0 16px 0 0"),
        )
        view = widgets.VBox(
            [
                self.cards,
                self.status,
                self.views.widget,
            ],
            layout=widgets.Layout(flex="1 1 auto", min_width="480px"),
        )
        self.widget = widgets.HBox(
            [controls, view], layout=widgets.Layout(align_items="flex-start")
        )
        self.widget.add_class("prunelab-explorer")
        self.strategy_menu.observe(self._on_strategy, "value")
        self.layers_menu.observe(self._on_layers, "value")
        self.outputs_box.observe(self._on_layers, "value")
        for control in (self.drive, self.sparsity_slider, self.threshold_slider):
            control.observe(self._on_setting, "value")

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Controls set from here, not by a person: their observers wait."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    def _show_options(self) -> None:
        """The current strategy's description and option controls."""
        name = self.strategy_menu.value
        row = self._table.loc[name]
        offered = strategy_options(name)
        # as the app's caption: what the controls do not offer is fixed, and said so
        chosen = {o.name for o in offered}
        fixed = [
            f"{what} <b>{row[what]}</b>" for what in ("scope", "granularity") if what not in chosen
        ]
        if row["needs"] != "-":
            fixed.append(f"needs <b>{row['needs']}</b> from the data")
        self.about.value = note(row["description"] + (f" ({', '.join(fixed)})" if fixed else ""))
        self.option_widgets = {o.name: _option_widget(o) for o in offered}
        for control in self.option_widgets.values():
            control.observe(self._on_option, "value")
        self.options_box.children = list(self.option_widgets.values())

    def _chosen_options(self) -> dict[str, object]:
        return {name: control.value for name, control in self.option_widgets.items()}

    def _reset_layers(self) -> None:
        """Every layer the strategy (with its options) can prune, as the app's default."""
        try:
            strategy = get_strategy(self.strategy_menu.value, **self._chosen_options())
        except (ValueError, TypeError):
            self.layers_menu.value = tuple(self._targets)
            return
        self.layers_menu.value = tuple(
            fqn for fqn, t in self._targets.items() if strategy.unsupported(t) is None
        )

    # -- reacting ------------------------------------------------------------------------------

    def _on_strategy(self, _change: dict) -> None:
        if self._busy:
            return
        with self._quiet():
            self._show_options()
            self._reset_layers()
        self._prepare()

    def _on_option(self, _change: dict) -> None:
        if self._busy:
            return
        with self._quiet():
            self._reset_layers()  # a new pattern may fit other layers (N:M needs M | inputs)
        self._prepare()

    def _on_layers(self, _change: dict) -> None:
        if not self._busy:
            self._prepare()

    def _on_setting(self, _change: dict) -> None:
        if not self._busy:
            self._update()

    def _prepare(self) -> None:
        """A Pruner for the chosen strategy, options and layers (kept), then the masks."""
        options = self._chosen_options()
        try:
            strategy = get_strategy(self.strategy_menu.value, **options)
            channel = isinstance(strategy.granularity, Channel)
            self.outputs_box.layout.display = "" if channel else "none"
            if channel and self.outputs_box.value:
                options = {**options, "prune_outputs": True}
            layers = tuple(self.layers_menu.value)
            if not layers:
                raise ValueError("pick at least one layer to prune")
            self._key = (self.strategy_menu.value, tuple(sorted(options.items())), layers)
            self._pruner = self._pruner_for(self._key)
        except (ValueError, TypeError) as exc:
            self._fail(f"This strategy cannot prune these layers: {exc}")
            return
        pruner = self._pruner
        skipped = [
            f"{fqn} ({t.module_type})"
            for fqn, t in self._targets.items()
            if fqn not in self.layers_menu.value and pruner.strategy.unsupported(t) is not None
        ]
        notes = [pruner.left_out.why + "." if pruner.left_out.fqns else ""]
        if skipped:
            notes.append(f"Not offered by this strategy: {', '.join(skipped)}.")
        self.status.value = note(html.escape(" ".join(n for n in notes if n)))
        with self._quiet():
            self._set_drive(pruner)
            self.views.set_layers([t.fqn for t in pruner.targets])
        self._update()

    def _pruner_for(self, key: tuple) -> Pruner:
        if key in self._pruners:
            self._pruners.move_to_end(key)
            return self._pruners[key]
        name, options, layers = key
        strategy = get_strategy(name, **dict(options))
        calibration = None
        if strategy.needs:
            if self._data is None:
                raise ValueError(
                    f"{name} scores weights with {', '.join(sorted(strategy.needs))} from data: "
                    "pass data, explore(model, data)"
                )
            if self._calibration is None:
                self._calibration = Calibration(
                    self._model, self._data, batches=CALIBRATION_BATCHES, batch_size=64
                )
            calibration = self._calibration
        pruner = Pruner(
            self._model,
            strategy,
            targets=list(layers),
            calibration=calibration,
            seed=self._setup.seed,
        )
        self._pruners[key] = pruner
        while len(self._pruners) > MAX_PRUNERS:
            self._pruners.popitem(last=False)
        return pruner

    def _set_drive(self, pruner: Pruner) -> None:
        """Which sliders apply: threshold only where the strategy ranks scores, none where the
        pattern fixes the sparsity (N:M); the threshold's range is the scores' range."""
        fixed = pruner.strategy.fixed_sparsity is not None
        by_threshold = pruner.strategy.by_threshold and not fixed
        self.drive.options = ["sparsity", "threshold"] if by_threshold else ["sparsity"]
        self.drive.layout.display = "" if by_threshold else "none"
        self.sparsity_slider.disabled = fixed
        if by_threshold:
            low, high = pruner.score_range() or (0.0, 1.0)
            low = min(low, 0.0)
            high = max(high, low + 1e-12)
            self.threshold_slider.min, self.threshold_slider.max = -1e300, 1e300
            self.threshold_slider.min, self.threshold_slider.max = low, high
            self.threshold_slider.step = (high - low) / 200
            self.threshold_slider.value = min(max(self.threshold_slider.value, low), high)
        threshold = self.drive.value == "threshold"
        self.threshold_slider.layout.display = "" if threshold else "none"
        self.sparsity_slider.layout.display = "none" if threshold else ""

    def _fail(self, message: str) -> None:
        self._pruner = self._masks = self._key = None
        self._metrics = {}
        self.status.value = note(html.escape(message), colour="#cf222e")
        self.cards.value = ""
        self.implied.value = ""

    def _update(self) -> None:
        """New masks by lookup, their metrics, and the figure on view."""
        if self._pruner is None:
            return
        pruner = self._pruner
        threshold = self.drive.value == "threshold"
        self.threshold_slider.layout.display = "" if threshold else "none"
        self.sparsity_slider.layout.display = "none" if threshold else ""
        if pruner.strategy.fixed_sparsity is not None:
            self._setting = ("fixed",)
            masks = pruner.masks()
            self.implied.value = note(
                f"Sparsity fixed by the pattern: {pruner.strategy.fixed_sparsity:.0%} "
                "of each pruned layer."
            )
        elif threshold:
            self._setting = ("threshold", float(self.threshold_slider.value))
            masks = pruner.masks(threshold=self._setting[1])
            self.implied.value = note(f"Implied sparsity: {masks.sparsity():.2%}")
        else:
            self._setting = ("sparsity", float(self.sparsity_slider.value))
            masks = pruner.masks(sparsity=self._setting[1])
            self.implied.value = _implied_text(pruner.implied_thresholds(self._setting[1]))
        self._masks = masks
        self._metrics = self._evaluate(masks)
        cards = metric_cards(masks, metrics=self._metrics, dense=self._dense, flops=self._flops)
        self.cards.value = cards_html(_with_perplexity(cards, self._metrics, self._dense))
        self.views.show(Shown(masks, pruner, self._key, self._setting))

    def _evaluate(self, masks: Masks) -> dict[str, float]:
        if self._data is None:
            return {}
        key = (self._key, self._setting)
        if key not in self._evaluations:
            self._evaluations[key] = evaluate(self._model, self._data, masks=masks)
            while len(self._evaluations) > MAX_EVALUATIONS:
                self._evaluations.popitem(last=False)
        self._evaluations.move_to_end(key)
        return self._evaluations[key]


def _with_perplexity(
    cards: list[Card], metrics: Mapping[str, float], dense: Mapping[str, float] | None
) -> list[Card]:
    """``cards`` with perplexity first among the quality numbers, for a language model.

    On token data perplexity is the headline (lower is better) and accuracy is next-token
    accuracy, so the accuracy card is renamed to say so; other models' cards are unchanged.
    """
    if dense is None or "perplexity" not in metrics:
        return cards
    value, base = metrics["perplexity"], dense["perplexity"]
    perplexity = Card(
        "Perplexity",
        f"{value:.2f}",
        # a difference and a ratio: a rise of 3 means more at 20 than at 200
        f"{value - base:+.2f} ({value / base - 1:+.1%})",
        "bad" if value > base else "good",
        f"Dense: {base:.2f}. exp of the mean next-token cross-entropy; lower is better.",
    )
    out = [
        dataclasses.replace(card, label="Next-token accuracy") if card.label == "Accuracy" else card
        for card in cards
    ]
    first = next((i for i, card in enumerate(out) if card.label == "Next-token accuracy"), None)
    out.insert(len(out) if first is None else first, perplexity)
    return out


def _option_widget(option: Option) -> widgets.ValueWidget:
    """The control for one option, as the app draws it (``prunelab.ui.widgets.option_control``):
    the option's label, help, choices, bounds; toggle buttons for two choices, a menu for more,
    a checkbox for a bool, a number box, or a text box."""
    common = {
        "description": option.label,
        "tooltip": option.help or None,
        "style": {"description_width": LABEL_WIDTH},
        "layout": _control_layout(),
    }
    if option.choices:
        labelled = [(option.show(c), c) for c in option.offered()]
        if len(labelled) <= 2:
            return widgets.ToggleButtons(options=labelled, value=option.default, **common)
        return widgets.Dropdown(options=labelled, value=option.default, **common)
    if isinstance(option.default, bool):
        return widgets.Checkbox(value=option.default, indent=False, **common)
    if isinstance(option.default, (int, float)):
        low, high, step = option.bounds()
        whole = isinstance(option.default, int)
        if step is not None:
            common["step"] = step
        if low is None and high is None:
            box = widgets.IntText if whole else widgets.FloatText
            return box(value=option.default, **common)
        # a bounded box has both bounds; a side left open is the widest number JSON carries
        widest = 2**53 if whole else 1e300
        low, high = (-widest if low is None else low), (widest if high is None else high)
        box = widgets.BoundedIntText if whole else widgets.BoundedFloatText
        return box(value=option.default, min=low, max=high, **common)
    return widgets.Text(value=str(option.default), **common)


def _control_layout() -> widgets.Layout:
    # one each: hiding one widget (display none) must not hide the others
    return widgets.Layout(width=CONTROL_WIDTH)


def _implied_text(cuts: dict[str, float]) -> str:
    if not cuts:
        return ""
    values = sorted(set(cuts.values()))
    text = f"{values[0]:.4g}" if len(values) == 1 else f"{values[0]:.4g} to {values[-1]:.4g}"
    return note(f"Implied threshold: {text}{' (per layer)' if len(values) > 1 else ''}")
