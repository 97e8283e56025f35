"""The Train page: masks from three sources, training with progress, results, bad input."""

from __future__ import annotations

import json

import pytest
import torch

import prunelab.training.quantize
from prunelab import Masks, prune
from prunelab.io import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page

PAGE = "pages/5_Train.py"


def _trained(at):
    at.number_input(key=Keys.train_epochs).set_value(1)
    at.button(key=Keys.train_run).click().run()
    assert_clean(at)
    return at


def test_train_shows_the_comparison_schedule_and_curves():
    at = page(PAGE).run()
    assert_clean(at)
    assert not at.get("plotly_chart")  # nothing trained before the button
    at = _trained(at)
    assert len(at.get("plotly_chart")) == 3
    dense = float(metric(at, "Dense accuracy").rstrip("%"))
    one_shot = float(metric(at, "One-shot (no training)").rstrip("%"))
    tuned = float(metric(at, "Fine-tuned").rstrip("%"))
    assert tuned > one_shot and dense > 90
    again = page(PAGE)
    again.run()
    again.number_input(key=Keys.train_epochs).set_value(1).run()
    assert_clean(again)
    assert len(again.get("plotly_chart")) == 3  # remembered: no button press needed


def test_freezing_every_layer_is_an_error_not_a_traceback():
    at = page(PAGE).run()
    for name in ("conv1", "conv2", "fc"):
        at.checkbox(key=Keys.train_freeze + name).check()
    at.number_input(key=Keys.train_epochs).set_value(1)
    at.button(key=Keys.train_run).click().run()
    assert not at.exception
    assert any("nothing to train" in e.value for e in at.error)


def test_masks_from_the_prune_page_and_a_bad_recipe():
    at = page(PAGE)
    model = zoo.load("sample:digits-cnn").model
    at.session_state[Keys.masks] = prune(model, "layer-magnitude", sparsity=0.5)
    at.session_state[Keys.masks_label] = "layer-magnitude at 50%"
    at.run()
    at.radio(key=Keys.train_source).set_value("Masks from the Prune page").run()
    assert_clean(at)
    assert any("layer-magnitude at 50%" in i.value for i in at.info)
    at.radio(key=Keys.train_source).set_value("A recipe").run()
    at.text_area(key=Keys.train_recipe).input("format: nonsense\n").run()
    assert not at.exception
    assert any("cannot be used" in e.value for e in at.error)


def test_prune_page_masks_for_another_model_are_refused():
    at = page(PAGE)
    at.session_state[Keys.masks] = Masks({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
    at.run()
    at.radio(key=Keys.train_source).set_value("Masks from the Prune page").run()
    assert not at.exception
    assert any("do not fit this model" in e.value for e in at.error)


def test_the_chosen_bits_and_schedule_window_reach_the_engine(monkeypatch):
    asked = []
    original = prunelab.training.quantize.evaluate_quantized

    def recording(model, data, *, bits, **kwargs):
        asked.append(bits)
        return original(model, data, bits=bits, **kwargs)

    monkeypatch.setattr(prunelab.training, "evaluate_quantized", recording)
    at = page(PAGE).run()
    at.slider(key=Keys.train_window).set_value((20, 80))
    at = _trained(at)
    assert sorted(asked) == [4, 8]  # the default choice
    asked.clear()
    at.multiselect(key=Keys.train_bits).set_value([6, 2]).run()
    assert_clean(at)
    assert sorted(asked) == [2, 6]  # no new training: only the quantized evaluations
    (table,) = at.dataframe
    rows = table.value.set_index("weights")
    assert list(rows.index) == ["float32 (as trained)", "6 bits", "2 bits"]
    assert rows.loc["2 bits", "accuracy"] != rows.loc["6 bits", "accuracy"]
    assert all(value.endswith("%") and "." in value for value in rows["accuracy"])
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    schedule = next(c for c in charts if c["layout"]["title"]["text"] == "Sparsity schedule")
    gradual = next(t for t in schedule["data"] if t["name"].startswith("gradual"))
    total = len(gradual["y"]) - 1
    first = next(i for i, y in enumerate(gradual["y"]) if y > 0)
    last = gradual["y"].index(max(gradual["y"]))
    assert first == pytest.approx(0.2 * total, abs=1) and last == pytest.approx(0.8 * total, abs=1)
    assert not [b for b in at.button if b.key == Keys.train_job + "_cancel"]  # finished


def test_a_running_training_has_a_cancel_button(monkeypatch):
    def stopped(*args, **kwargs):
        raise ValueError("stopped here, as if cancelled")

    monkeypatch.setattr(prunelab.training, "finetune", stopped)
    at = page(PAGE).run()
    at.button(key=Keys.train_run).click().run()
    assert not at.exception
    assert at.button(key=Keys.train_job + "_cancel").label == "Cancel"
    assert any("stopped here" in e.value for e in at.error)
