"""The Train page: masks from three sources, training with progress, results, bad input."""

from __future__ import annotations

import torch

from prunelab import Masks, prune, zoo
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
