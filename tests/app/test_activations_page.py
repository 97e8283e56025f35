"""The Activations page: layer statistics, the shift under weight masks, thresholding and the
sparsifier, on every sample model."""

from __future__ import annotations

import json

import pytest

import prunelab
from prunelab.io import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page

PATH = "pages/3_Activations.py"


def _percent(text: str) -> float:
    return float(text.rstrip("%"))


def _charts(at) -> dict[str, dict]:
    return {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def _trace_names(at) -> set[str]:
    return {t.get("name") for spec in _charts(at).values() for t in spec["data"]}


def test_default_model_shows_the_rectified_activations():
    at = page(PATH).run()
    assert_clean(at)
    assert at.selectbox(key=Keys.act_layer).value == "conv2:input"
    assert metric(at, "Channels") == "16"
    assert 5 < _percent(metric(at, "Exact zeros (activation sparsity)")) < 100
    assert len(at.get("plotly_chart")) == 5  # histogram, boxes, APoZ, threshold, mask
    assert len(at.caption) >= 5  # an explanation under every figure
    assert "with weight masks" not in _trace_names(at)


def test_weight_masks_from_the_prune_page_are_overlaid():
    at = page(PATH)
    model = zoo.load("sample:digits-cnn").model
    at.session_state[Keys.masks] = prunelab.prune(model, "global-magnitude", sparsity=0.9)
    at.session_state[Keys.masks_label] = "global-magnitude at 90% on digits-cnn"
    at.run()
    assert_clean(at)
    assert {"dense", "with weight masks"} <= _trace_names(at)
    assert at.checkbox(key=Keys.act_with_masks).value
    at.checkbox(key=Keys.act_with_masks).uncheck().run()
    assert_clean(at)
    assert "with weight masks" not in _trace_names(at)


def test_masks_of_another_model_are_not_applied():
    at = page(PATH)
    other = zoo.load("sample:digits-mlp").model
    at.session_state[Keys.masks] = prunelab.prune(other, "global-magnitude", sparsity=0.5)
    at.run()
    assert_clean(at)
    assert "with weight masks" not in _trace_names(at)
    assert any("No weight masks for this model" in c.value for c in at.caption)


def test_threshold_raises_activation_sparsity_and_costs_accuracy():
    at = page(PATH).run()
    before = _percent(metric(at, "Activation sparsity"))
    assert metric(at, "Agreement with dense") == "100.00%"
    slider = at.slider(key=Keys.act_threshold)
    slider.set_value(slider.max * 0.5).run()
    assert_clean(at)
    assert _percent(metric(at, "Activation sparsity")) > before
    assert _percent(metric(at, "Agreement with dense")) < 100


def test_sparsifier_per_feature_with_a_sparsity_level():
    at = page(PATH).run()
    at.selectbox(key=Keys.act_mask_fn).select("sparsity level").run()
    at.slider(key=Keys.act_sparsity_level).set_value(0.75).run()
    assert_clean(at)
    assert metric(at, "Positions kept by the mask") == "25.0%"
    at.checkbox(key=Keys.act_per_feature).check().run()
    assert_clean(at)
    assert metric(at, "Positions kept by the mask") == "25.0%"  # each channel keeps 25%
    mask_chart = _charts(at)
    assert any("feature 15" in json.dumps(spec["layout"]) for spec in mask_chart.values())
    assert 0 < _percent(metric(at, "Accuracy with the mask")) <= 100


def test_an_output_layer_explains_where_the_sparsifier_works():
    at = page(PATH).run()
    at.selectbox(key=Keys.act_layer).select("conv1").run()
    assert_clean(at)
    assert any("masks what *enters* a layer" in i.value for i in at.info)
    assert metric(at, "Exact zeros (activation sparsity)") == "0.0%"  # before the ReLU


@pytest.mark.parametrize(
    ("model", "data", "layer"),
    [
        ("sample:digits-mlp", "sample:digits", "fc2:input"),
        ("sample:sentiment-lstm", "sample:sentiment", "fc:input"),
    ],
)
def test_other_sample_models(model, data, layer):
    at = page(PATH).run()
    at.sidebar.selectbox(key=Keys.sample).select(model)
    at.sidebar.selectbox(key=Keys.data_choice).select(data).run()
    assert_clean(at)
    assert at.selectbox(key=Keys.act_layer).value == layer
    at.checkbox(key=Keys.act_per_feature).check().run()
    assert_clean(at)
    if model.endswith("lstm"):
        at.selectbox(key=Keys.act_layer).select("lstm").run()
        assert_clean(at)
        assert metric(at, "Channels") == "64"


def test_on_a_large_model_the_sparsifier_runs_when_asked(monkeypatch):
    from prunelab.ui import engine

    monkeypatch.setattr(engine, "AUTO_EVALUATE_PARAMS", 1_000)  # digits-cnn counts as large
    at = page(PATH).run()
    assert_clean(at)
    kept = "Positions kept by the mask"
    assert kept not in [m.label for m in at.metric]
    at.button(key=Keys.act_sparsify_run).click().run()
    assert_clean(at)
    shown = metric(at, kept)
    at.run()  # the same settings: shown again without asking
    assert metric(at, kept) == shown
    at.number_input(key=Keys.act_mask_threshold).set_value(0.5).run()
    assert kept not in [m.label for m in at.metric]  # new settings: asked again
