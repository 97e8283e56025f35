"""The notebook explorer: moving its controls through the widgets' state changes the numbers and
the figures, and what it hands over (masks, recipe) is what the engine gives at that setting."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

import prunelab
from prunelab.core.options import Option
from prunelab.core.strategies import _REGISTRY, ScoredStrategy, register_strategy, strategy_options
from tests.conftest import make_cnn, make_mlp


@pytest.fixture(scope="module")
def mlp_and_data():
    model = make_mlp().eval()
    torch.manual_seed(1)
    x = torch.randn(96, 12)
    return model, (x, model(x).argmax(1).detach())  # labels the dense model gets right


@pytest.fixture
def lab(mlp_and_data):
    model, data = mlp_and_data
    return prunelab.explore(model, data, sparsity=0.3)


def _z(figure_widget, name):
    trace = next(t for t in figure_widget.data if t.name == name)
    return np.asarray(trace.z, dtype=float)


def _same(masks, other):
    return list(masks) == list(other) and all(torch.equal(masks[f], other[f]) for f in masks)


def test_a_slider_move_changes_the_metrics_and_the_figures(lab):
    before_cards, before_metrics = lab.cards.value, lab.metrics
    before_after = _z(lab.figure_widgets["weights"], "after")
    widget_before = lab.figure_widgets["weights"]
    lab.sparsity_slider.value = 0.9  # as the browser sets it
    assert lab.metrics["agreement"] < before_metrics["agreement"]
    assert lab.cards.value != before_cards and f"{lab.masks.sparsity():.1%}" in lab.cards.value
    after = _z(lab.figure_widgets["weights"], "after")
    assert np.isnan(after).sum() > np.isnan(before_after).sum()  # more weights pruned
    assert lab.figure_widgets["weights"] is widget_before  # updated in place, not replaced
    lab.tabs.selected_index = list(lab.figure_widgets).index("layers")
    bars = lab.figure_widgets["layers"].data[0]
    assert max(bars.x) > 50  # percent, from the masks at 90%


def test_only_the_figure_on_view_is_rebuilt_and_grids_travel_as_json(lab):
    lab.tabs.selected_index = list(lab.figure_widgets).index("histogram")
    histogram = lab.figure_widgets["histogram"].to_dict()
    lab.tabs.selected_index = list(lab.figure_widgets).index("mask")
    lab.sparsity_slider.value = 0.8
    assert lab.figure_widgets["histogram"].to_dict() == histogram  # hidden: not redrawn yet
    lab.tabs.selected_index = list(lab.figure_widgets).index("histogram")
    assert lab.figure_widgets["histogram"].to_dict() != histogram  # caught up when opened
    lab.tabs.selected_index = list(lab.figure_widgets).index("weights")
    for trace in lab.figure_widgets["weights"].data:  # pruned cells are gaps: null, not NaN
        json.dumps(np.asarray(trace.z, dtype=object).tolist(), allow_nan=False)


def test_dense_deltas_are_shown(lab):
    lab.sparsity_slider.value = 0.0
    assert lab.metrics["agreement"] == 1.0 and lab.metrics["kl"] < 1e-9
    assert "+0.00 points" in lab.cards.value
    assert lab.dense_metrics["accuracy"] == 1.0


def test_masks_and_recipe_match_prune_at_that_setting(lab, mlp_and_data):
    model, _ = mlp_and_data
    lab.strategy_menu.value = "layer-magnitude"
    lab.sparsity_slider.value = 0.65
    expected = prunelab.prune(model, "layer-magnitude", sparsity=0.65)
    assert _same(lab.masks, expected)
    recipe = lab.recipe()
    assert isinstance(recipe, prunelab.Recipe) and recipe.strategy == "layer-magnitude"
    assert _same(recipe.masks(model), expected)
    assert recipe.provenance.baseline == 1.0


def test_threshold_drive_matches_prune_by_threshold(lab, mlp_and_data):
    model, _ = mlp_and_data
    lab.strategy_menu.value = "global-magnitude"
    lab.drive.value = "threshold"
    low, high = lab.threshold_slider.min, lab.threshold_slider.max
    assert low <= 0.0 < high
    lab.threshold_slider.value = 0.1
    cut = lab.threshold_slider.value
    assert _same(lab.masks, prunelab.prune(model, "global-magnitude", threshold=cut))
    assert "Implied sparsity" in lab.implied.value


def test_options_come_from_the_strategy_and_change_the_masks(mlp_and_data):
    model, data = mlp_and_data
    lab = prunelab.explore(model, data, strategy="weight-norm-channel", sparsity=0.5)
    assert set(lab.option_widgets) == {"granularity", "scope", "p"}
    norm = lab.option_widgets["p"]  # drawn as the app draws it: its label, its values' names
    assert norm.description == "Norm" and norm.options == (("L1", 1), ("L2", 2))
    assert lab.option_widgets["scope"].tooltip == strategy_options("weight-norm-channel")[1].help
    assert lab.masks.per_layer()["sparsity"].iloc[-1] == 0.0  # the classifier is left out
    assert "Left out" in lab.status.value
    lab.outputs_box.value = True
    strategy = prunelab.get_strategy("weight-norm-channel", prune_outputs=True)
    assert _same(lab.masks, prunelab.prune(model, strategy, sparsity=0.5))
    lab.option_widgets["p"].value = 2.0
    strategy = prunelab.get_strategy("weight-norm-channel", p=2.0, prune_outputs=True)
    assert _same(lab.masks, prunelab.prune(model, strategy, sparsity=0.5))
    assert lab.recipe().masks(model).sparsity() == pytest.approx(lab.masks.sparsity())


def test_a_fixed_pattern_disables_the_slider():
    model = make_cnn().eval()
    lab = prunelab.explore(model, example_input=torch.randn(1, 3, 8, 8), strategy="n:m")
    patterns = lab.option_widgets["granularity"]
    assert [value for _, value in patterns.options] == ["2:4", "1:4", "4:8"]
    assert patterns.description == "N:M pattern" and "scope" not in lab.option_widgets
    assert lab.sparsity_slider.disabled and lab.drive.options == ("sparsity",)
    lab.option_widgets["granularity"].value = "1:4"
    nm = prunelab.get_strategy("n:m", granularity="1:4")
    assert _same(lab.masks, prunelab.prune(model, nm))
    assert "no data" in lab.cards.value and "Effective FLOPs" in lab.cards.value


def test_data_driven_strategies_use_the_data_and_say_when_there_is_none(mlp_and_data):
    model, data = mlp_and_data
    lab = prunelab.explore(model, strategy="layer-activation-magnitude")
    assert "pass data" in lab.status.value
    with pytest.raises(ValueError, match="no masks"):
        _ = lab.masks
    lab = prunelab.explore(model, data, strategy="layer-activation-magnitude", sparsity=0.4)
    calibration = prunelab.Calibration(model, data, batches=4, batch_size=64)
    expected = prunelab.prune(
        model, "layer-activation-magnitude", sparsity=0.4, calibration=calibration
    )
    assert _same(lab.masks, expected)


def test_a_slider_move_looks_up_and_does_not_sort_again(lab, monkeypatch):
    from prunelab.core import select

    calls, sort = [], np.sort
    monkeypatch.setattr(select.np, "sort", lambda *a, **k: calls.append(1) or sort(*a, **k))
    for value in (0.2, 0.4, 0.6):
        lab.sparsity_slider.value = value
    assert calls == []
    lab.strategy_menu.value = "layer-magnitude"  # a new strategy sorts its scores once
    lab.strategy_menu.value = "global-magnitude"  # and a kept one does not
    assert len(calls) <= len(lab.masks)


@pytest.fixture
def registry():
    saved = dict(_REGISTRY)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_a_registered_strategy_gets_its_controls(registry, mlp_and_data):
    @register_strategy("test-powered-magnitude")
    @dataclass(frozen=True)
    class Powered(ScoredStrategy):
        """|w| to a power, within each layer."""

        power: float = field(
            default=1.0,
            metadata={"option": Option("Power", low=0.5, high=4, help="Exponent of |w|.")},
        )

        def scores(self, layer):
            return layer.weight.abs() ** self.power

    assert [o.name for o in strategy_options("test-powered-magnitude")] == [
        "granularity",
        "scope",
        "power",
    ]
    model, data = mlp_and_data
    lab = prunelab.explore(model, data, strategy="test-powered-magnitude", sparsity=0.5)
    assert "test-powered-magnitude" in lab.strategy_menu.options
    box = lab.option_widgets["power"]  # the app's label, range and help
    assert (box.description, box.min, box.max) == ("Power", 0.5, 4.0)
    assert box.tooltip == "Exponent of |w|."
    lab.option_widgets["power"].value = 3.0
    assert lab.strategy.power == 3.0


def test_the_model_is_left_as_it_was(mlp_and_data):
    model, data = mlp_and_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lab = prunelab.explore(model, data)
    lab.sparsity_slider.value = 0.95
    lab.strategy_menu.value = "random"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_it_shows_in_a_notebook_and_takes_a_bundle():
    lab = prunelab.explore("sample:digits-mlp", "sample:digits", sparsity=0.8)
    bundle = lab._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert lab.recipe().provenance.model == "sample:digits-mlp"
    assert lab.recipe().provenance.data == "sample:digits"
    with pytest.raises(ValueError, match="no prunable"):
        prunelab.explore(nn.Sequential(nn.ReLU()))
