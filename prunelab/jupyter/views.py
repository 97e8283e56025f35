"""The explorer's figures: one tab per view, the one on view kept up to date.

Each view is a plotly ``FigureWidget`` updated in place (:func:`.live.refresh`) from the same
``prunelab.figures`` builders the app's Prune page draws with. A slider move rebuilds only the
figure on view; a hidden tab catches up when it is opened, and a figure whose inputs did not
change (the histogram of a layer whose cut-off stayed) is not rebuilt at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import plotly.graph_objects as go
import torch
from torch import nn

from .. import figures
from ..core.masks import Masks
from ..core.pruner import Pruner
from ..core.targets import Target
from .live import note, refresh

__all__ = ["EXPLAIN", "FIGURE_HEIGHT", "VIEWS", "Shown", "Views"]

FIGURE_HEIGHT = 380  # px
VIEWS = {"layers": "Per layer", "weights": "Weights", "histogram": "Histogram", "mask": "Mask"}
EXPLAIN = {
    "layers": "Each bar is one layer's sparsity, the dashed line the overall sparsity. A global "
    "strategy ranks all weights together, so layers with small weights lose more.",
    "weights": "Left, the layer's weights; right, after pruning (pruned weights black). Blue is "
    "positive, red negative; convolutions are drawn as output channels by inputs x kernel.",
    "histogram": "The layer's weight distribution. Where the scores are |w|, the shaded band "
    "between the dashed lines is what the current setting prunes.",
    "mask": "The mask: kept weights blue, pruned black. Unstructured masks look like noise, "
    "channel masks like whole rows, N:M like a regular comb.",
}


@dataclass(frozen=True)
class Shown:
    """What the controls chose: masks, the Pruner that made them and how.

    Attributes:
        masks: The masks.
        pruner: The Pruner that made them (its scores give the histogram's cut-off).
        key: Names the strategy, options and layers (the Pruner's cache key).
        setting: ``("sparsity", s)``, ``("threshold", t)`` or ``("fixed",)``.
    """

    masks: Masks
    pruner: Pruner
    key: tuple
    setting: tuple


class Views:
    """A layer picker and the tabs of figures.

    Args:
        model: The dense model (its weights are drawn; never modified).
        found: The model's prunable targets by fqn.
    """

    def __init__(self, model: nn.Module, found: Mapping[str, Target]) -> None:
        self._model, self._targets = model, found
        self._shown: Shown | None = None
        self._drawn: dict[str, tuple] = {}
        self._magnitude_like: dict[tuple, bool] = {}
        self.focus_menu = widgets.Dropdown(description="Layer", style={"description_width": "40px"})
        self.heatmap_layout = widgets.ToggleButtons(
            options=["matrix", "filters"], style={"button_width": "70px"}
        )
        self.figure_widgets = {
            view: go.FigureWidget(layout={"height": FIGURE_HEIGHT}) for view in VIEWS
        }
        self.tabs = widgets.Tab(
            children=[
                widgets.VBox([self.figure_widgets[v], widgets.HTML(note(EXPLAIN[v]))])
                for v in VIEWS
            ],
            titles=list(VIEWS.values()),
            selected_index=1,
        )
        self.widget = widgets.VBox(
            [widgets.HBox([self.focus_menu, self.heatmap_layout]), self.tabs]
        )
        self.focus_menu.observe(self._on_view, "value")
        self.heatmap_layout.observe(self._on_view, "value")
        self.tabs.observe(self._on_view, "selected_index")
        self._quiet = False

    def set_layers(self, fqns: Sequence[str]) -> None:
        """The layers the picker offers (the current one stays when it is still there)."""
        current = self.focus_menu.value
        self._quiet = True
        try:
            self.focus_menu.options = list(fqns)
            self.focus_menu.value = current if current in fqns else fqns[0]
        finally:
            self._quiet = False

    def show(self, shown: Shown | None) -> None:
        """Draw ``shown`` (None: nothing to draw, the figures stay as they were)."""
        self._shown = shown
        self.draw()

    @property
    def view(self) -> str:
        """The view on screen: ``"layers"``, ``"weights"``, ``"histogram"`` or ``"mask"``."""
        return list(VIEWS)[self.tabs.selected_index or 0]

    def _on_view(self, _change: dict) -> None:
        if not self._quiet:
            self.draw()

    def draw(self) -> None:
        """Rebuild the figure on view if what it shows changed."""
        shown, view, fqn = self._shown, self.view, self.focus_menu.value
        if shown is None or fqn not in shown.masks:
            return
        weight, mask = self._oriented(fqn, shown.masks)
        self.heatmap_layout.layout.display = "" if view == "weights" and weight.ndim > 2 else "none"
        self.focus_menu.layout.display = "none" if view == "layers" else ""
        if view == "histogram":
            key = (fqn, self.cut(fqn))
        elif view == "layers":
            key = (shown.key, shown.setting)
        else:
            key = (shown.key, shown.setting, fqn, self.heatmap_layout.value)
        if self._drawn.get(view) == key:
            return
        if view == "layers":
            figure = figures.layer_sparsity(shown.masks)
        elif view == "weights":
            layout = self.heatmap_layout.value if weight.ndim > 2 else "matrix"
            figure = figures.weight_heatmap(weight, mask, layout=layout)
        elif view == "histogram":
            figure = figures.weight_histogram(weight, threshold=key[1])
        else:
            figure = figures.mask_pattern(mask)
        # the reader's zoom survives slider moves, not a change of layer
        figure.update_layout(height=FIGURE_HEIGHT, uirevision=f"{view}:{fqn}")
        refresh(self.figure_widgets[view], figure)
        self._drawn[view] = key

    def _oriented(self, fqn: str, masks: Masks) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's weight and mask with output channels as rows (transposed convs store
        them in dim 1)."""
        weight = self._model.get_parameter(fqn).detach()
        mask = masks[fqn]
        if weight.ndim > 1 and self._targets[fqn].out_dim == 1:
            weight, mask = weight.movedim(1, 0), mask.movedim(1, 0)
        return weight, mask

    def cut(self, fqn: str) -> float | None:
        """The |w| cut-off of the current setting on this layer, when the strategy's scores
        are the weights' magnitudes, one per weight; else None (no cut on the weight axis)."""
        shown = self._shown
        if shown is None:
            return None
        key = (shown.key, fqn)
        if key not in self._magnitude_like:
            scores = shown.pruner.scores().get(fqn)
            weight = self._model.get_parameter(fqn).detach()
            self._magnitude_like[key] = (
                scores is not None
                and tuple(scores.shape) == tuple(weight.shape)
                and torch.equal(scores.float(), weight.abs().float())
            )
        if not self._magnitude_like[key]:
            return None
        if shown.setting[0] == "threshold":
            return shown.setting[1]
        if shown.setting[0] == "sparsity":
            return shown.pruner.implied_thresholds(shown.setting[1]).get(fqn)
        return None
