"""Every page runs on the default model; the Prune page reacts to its widgets."""

from __future__ import annotations

import pytest
import torch

from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page


@pytest.mark.parametrize("path", ["app.py", "pages/1_Model.py", "pages/7_Learn.py"])
def test_page_runs_on_the_default_model(path):
    at = page(path).run()
    assert_clean(at)
    assert at.sidebar.selectbox(key=Keys.sample).value == "sample:digits-cnn"


def test_model_page_shows_baseline_and_layers():
    at = page("pages/1_Model.py").run()
    assert float(metric(at, "Accuracy (dense)").rstrip("%")) >= 97
    table = at.dataframe[0].value
    assert list(table["fqn"]) == ["conv1.weight", "conv2.weight", "fc.weight"]
    at.selectbox(key=Keys.model_focus).select("fc.weight").run()
    assert_clean(at)


def test_prune_slider_changes_sparsity_and_figures():
    at = page("pages/2_Prune.py").run()
    assert_clean(at)
    assert metric(at, "Sparsity") == "50.0%"
    before = at.session_state[Keys.masks]
    heatmap_before = at.get("plotly_chart")[0].proto.spec
    at.slider(key=Keys.sparsity).set_value(0.8).run()
    assert_clean(at)
    assert metric(at, "Sparsity") == "80.0%"
    after = at.session_state[Keys.masks]
    assert after.sparsity() == pytest.approx(0.8, abs=1e-3)
    assert before.sparsity() == pytest.approx(0.5, abs=1e-3)
    assert at.get("plotly_chart")[0].proto.spec != heatmap_before
    accuracy = float(metric(at, "Accuracy").rstrip("%"))
    assert 0 < accuracy <= 100


@pytest.mark.parametrize(
    "strategy",
    [
        "layer-magnitude",
        "random",
        "weight-norm-channel",
        "n:m",
        "layer-activation-magnitude",
        "global-magnitude-gradient",
        "activation-norm-channel",
        "threshold",
    ],
)
def test_switching_strategy_works(strategy):
    at = page("pages/2_Prune.py").run()
    at.selectbox(key=Keys.strategy).select(strategy).run()
    assert_clean(at)
    masks = at.session_state[Keys.masks]
    assert 0.0 < masks.sparsity() < 1.0


def test_threshold_drives_the_masks():
    at = page("pages/2_Prune.py").run()
    at.radio(key=Keys.drive).set_value("threshold").run()
    at.slider(key=Keys.threshold).set_value(0.05).run()
    assert_clean(at)
    masks = at.session_state[Keys.masks]
    weights = {n: p.detach() for n, p in _model().named_parameters()}
    for fqn, mask in masks.items():
        assert torch.equal(mask, weights[fqn].abs() > 0.05)
    assert any("Implied sparsity" in c.value for c in at.caption)


def test_compare_view_shows_overlap():
    at = page("pages/2_Prune.py").run()
    at.session_state[Keys.view] = "compare"  # the view picker (a segmented control)
    at.run()
    at.selectbox(key=Keys.compare).select("random").run()
    assert_clean(at)
    overlap = at.dataframe[-1].value
    assert {"fqn", "iou"} <= set(overlap.columns)


def test_two_sessions_are_isolated():
    first = page("pages/2_Prune.py").run()
    second = page("pages/2_Prune.py").run()
    first.slider(key=Keys.sparsity).set_value(0.9).run()
    second.slider(key=Keys.sparsity).set_value(0.2).run()
    first.run()
    assert metric(first, "Sparsity") == "90.0%"
    assert metric(second, "Sparsity") == "20.0%"
    assert first.session_state[Keys.masks].sparsity() == pytest.approx(0.9, abs=1e-3)
    assert second.session_state[Keys.masks].sparsity() == pytest.approx(0.2, abs=1e-3)


def _model():
    from prunelab import zoo

    return zoo.load("sample:digits-cnn").model


def test_switching_model_switches_to_its_data():
    at = page("pages/1_Model.py").run()
    at.sidebar.selectbox(key=Keys.sample).select("sample:sentiment-lstm").run()
    assert_clean(at)
    assert at.sidebar.selectbox(key=Keys.data_choice).value == "sample:sentiment"
    assert not at.warning


def test_prune_page_offers_a_recipe_that_reproduces_its_masks():
    at = page("pages/2_Prune.py").run()
    at.slider(key=Keys.sparsity).set_value(0.65).run()
    assert_clean(at)
    assert at.get("download_button")
    recipe, masks = at.session_state[Keys.recipe], at.session_state[Keys.masks]
    again = recipe.masks(_model())
    assert all(torch.equal(masks[f], again[f]) for f in masks)
    assert recipe.provenance.model == "sample:digits-cnn"


def test_layer_choice_follows_the_model():
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.sample).select("sample:digits-mlp").run()
    assert_clean(at)
    assert set(at.session_state[Keys.masks]) == {"fc1.weight", "fc2.weight", "fc3.weight"}


@pytest.mark.parametrize("view", ["weights", "mask", "histogram", "channels", "layers", "compare"])
def test_prune_page_builds_only_the_figure_on_view(view):
    at = page("pages/2_Prune.py")
    at.session_state[Keys.view] = view
    at.run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 1
