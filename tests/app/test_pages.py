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
    assert metric(at, "Accuracy") == f"{accuracy:.2f}%"  # one format for accuracy everywhere


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


def _slider_keys(at) -> set[str]:
    return {s.key for s in at.slider}


def test_only_controls_that_apply_are_shown():
    at = page("pages/2_Prune.py").run()
    assert Keys.sparsity in _slider_keys(at) and Keys.threshold not in _slider_keys(at)
    at.radio(key=Keys.drive).set_value("threshold").run()
    assert Keys.threshold in _slider_keys(at) and Keys.sparsity not in _slider_keys(at)
    at.selectbox(key=Keys.strategy).select("random").run()
    assert_clean(at)
    # random has no scores to cut at: no threshold slider and no choice of what drives it
    assert Keys.threshold not in _slider_keys(at) and Keys.sparsity in _slider_keys(at)
    assert not [r for r in at.radio if r.key == Keys.drive]
    texts = [m.label for m in at.metric] + [c.value for c in at.caption]
    assert not [t for t in texts if "< 0" in t]


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
    from prunelab.io import zoo

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
    recipe, masks = at.session_state[Keys.recipe](), at.session_state[Keys.masks]
    again = recipe.masks(_model())
    assert all(torch.equal(masks[f], again[f]) for f in masks)
    assert recipe.provenance.model == "sample:digits-cnn"


def test_layer_choice_follows_the_model():
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.sample).select("sample:digits-mlp").run()
    assert_clean(at)
    assert set(at.session_state[Keys.masks]) == {"fc1.weight", "fc2.weight", "fc3.weight"}


@pytest.mark.parametrize(
    ("strategy", "kept"),
    [
        ("layer-activation-magnitude", ["lstm.weight_ih_l0", "fc.weight"]),
        ("activation-norm-channel", ["fc.weight"]),
    ],
)
def test_activation_strategies_on_the_lstm_prune_the_layers_they_can(strategy, kept):
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.sample).select("sample:sentiment-lstm").run()
    at.sidebar.selectbox(key=Keys.strategy).select(strategy).run()
    assert_clean(at)
    if strategy == "activation-norm-channel":
        # its one prunable layer is the classifier: left out by default, with what to do
        assert any("Nothing to prune" in i.value for i in at.info)
        at.sidebar.checkbox(key=Keys.prune_outputs).check().run()
        assert_clean(at)
    layers = next(m for m in at.multiselect if m.label == "Layers to prune")
    assert layers.value == kept
    assert sorted(at.session_state[Keys.masks]) == sorted(kept)
    assert any("cannot prune them" in e.label for e in at.expander)


def test_a_torchvision_model_gets_data_that_fits_it_and_is_judged_by_fidelity():
    at = page("pages/1_Model.py").run()
    at.sidebar.radio(key=Keys.model_source).set_value("torchvision architecture").run()
    at.sidebar.selectbox(key=Keys.torchvision_arch).select("resnet18").run()
    assert_clean(at)
    data = at.sidebar.selectbox(key=Keys.data_choice)
    assert data.value == "sample:digits?input=3x224x224&labels=0&limit=16"
    assert "digits resized to 3x224x224, no labels" in data.format_func(data.value)
    assert metric(at, "Labels") == "none" and metric(at, "Parameters") == "11.7M"
    assert any("no accuracy is measured" in c.value for c in at.caption)


@pytest.mark.parametrize("view", ["weights", "mask", "histogram", "channels", "layers", "compare"])
def test_prune_page_builds_only_the_figure_on_view(view):
    at = page("pages/2_Prune.py")
    at.session_state[Keys.view] = view
    at.run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 1


def test_the_landing_page_says_unlabelled_data_has_no_accuracy():
    at = page("app.py").run()
    at.sidebar.radio(key=Keys.model_source).set_value("torchvision architecture").run()
    at.sidebar.selectbox(key=Keys.torchvision_arch).select("resnet18").run()
    assert_clean(at)
    assert metric(at, "Labels") == "none"
    assert not [m for m in at.metric if m.label == "Accuracy (dense)"]


def test_the_strategy_menu_shows_names_and_the_description_below_it():
    at = page("pages/2_Prune.py").run()
    menu = at.sidebar.selectbox(key=Keys.strategy)
    assert menu.format_func(menu.value) == "global-magnitude"
    assert any(c.value.startswith("Prune the") for c in at.sidebar.caption)
