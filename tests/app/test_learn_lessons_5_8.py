"""Learn lessons 5-8, each run on its own: it draws without errors and reacts to its controls
(a control changed, the figure's data or the numbers shown change)."""

from __future__ import annotations

import json

import torch
from streamlit.testing.v1 import AppTest

from tests.app.conftest import TIMEOUT, assert_clean, metric


def _lesson(number: int) -> AppTest:
    """An AppTest of one lesson's ``render()`` alone, already run once."""
    script = f"from prunelab.ui.views.learn import lesson{number}\nlesson{number}.render()\n"
    at = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    assert_clean(at)
    return at


def _charts(at: AppTest) -> dict[str, dict]:
    """``{chart key: plotly spec}`` of the charts drawn."""
    return {c.proto.id.rsplit("-", 1)[-1]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}


def _chart(at: AppTest, key: str) -> dict:
    found = [spec for name, spec in _charts(at).items() if key in name]
    assert len(found) == 1, list(_charts(at))
    return found[0]


def test_lesson5_marks_the_chosen_sparsity_and_names_the_layers_that_break():
    at = _lesson(5)
    assert metric(at, "Layers that break") == "3 of 9"  # at 70%, losing more than 2 points
    assert any("stem" in c.value for c in at.caption)  # the first convolution breaks first
    shapes = _chart(at, "learn5_chart")["layout"]["shapes"]
    at.slider(key="learn5_tolerance").set_value(20).run()
    assert_clean(at)
    assert metric(at, "Layers that break") == "1 of 9"
    at.select_slider(key="learn5_sparsity").set_value(0.95).run()
    assert int(metric(at, "Layers that break").split()[0]) > 1
    assert _chart(at, "learn5_chart")["layout"]["shapes"] != shapes  # both lines moved


def test_lesson6_shows_one_shot_at_once_then_trains_both_ways():
    at = _lesson(6)
    bars = _chart(at, "learn6_bars")["data"][0]
    assert bars["x"] == ["one-shot"] and at.info  # the button has not been pressed
    at.select_slider(key="learn6_sparsity").set_value(0.8).run()
    assert _chart(at, "learn6_bars")["data"][0]["y"] != bars["y"]  # less pruned: less lost
    at.button(key="learn6_train").click().run()
    assert_clean(at)
    trained = _chart(at, "learn6_bars")["data"][0]
    assert trained["x"] == ["one-shot", "fine-tuned", "gradual"]
    one_shot, tuned, gradual = trained["y"]
    assert tuned > one_shot and gradual > one_shot  # training wins back what pruning lost
    assert "learn6_curves" in "".join(_charts(at))


def test_lesson7_weight_and_activation_zeros_follow_their_own_sliders():
    at = _lesson(7)
    weights = metric(at, "Zeros in the weights")
    flowing = metric(at, "Zeros between layers")
    at.slider(key="learn7_threshold").set_value(1.0).run()
    assert_clean(at)
    assert metric(at, "Zeros in the weights") == weights
    assert float(metric(at, "Zeros between layers").rstrip("%")) > float(flowing.rstrip("%"))
    mask = _chart(at, "learn7_chart")["data"][0]["z"]
    at.slider(key="learn7_weights").set_value(0.9).run()
    assert metric(at, "Zeros in the weights") == "90.00%"
    assert _chart(at, "learn7_chart")["data"][0]["z"] != mask


def test_lesson8_removing_channels_shrinks_bytes_and_says_where_2_4_runs():
    at = _lesson(8)
    sizes = _chart(at, "learn8_sizes")["data"][0]
    assert sizes["x"][:2] == ["dense", "masked"]
    assert sizes["y"][0] == sizes["y"][1]  # zeros stored densely take the same bytes
    params = metric(at, "Parameters left after removal")
    at.slider(key="learn8_sparsity").set_value(0.8).run()
    assert_clean(at)
    assert metric(at, "Parameters left after removal") != params
    assert _chart(at, "learn8_sizes")["data"][0]["y"][-1] < sizes["y"][-1]
    speed = _chart(at, "learn8_times")["data"]
    assert {t["name"] for t in speed} >= {"dense", "masked", "shrunk"}
    assert any("masked, batch 1:" in c.value for c in at.caption)  # each verdict, in words
    if not torch.cuda.is_available():
        assert any("2:4" in box.value and "CPU" in box.value for box in at.info)
