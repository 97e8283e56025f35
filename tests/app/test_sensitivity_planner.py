"""The Sensitivity page's planner: budget kinds, prediction beside measurement, the steps, and
the allocations compared in one chart."""

from __future__ import annotations

from prunelab.ui.state import Keys
from tests.app import test_sensitivity_page
from tests.app.conftest import assert_clean, metric

analysed = test_sensitivity_page.analysed  # the page with an analysis run: one fixture


def _steps(at):
    return next(d.value for d in at.dataframe if "measured_drop" in d.value.columns)


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_prediction_measurement_and_steps_are_shown(analysed):
    at = analysed
    summed = metric(at, "Sum of single-layer drops")
    predicted = metric(at, "Predicted drop")
    measured = float(metric(at, "Measured accuracy").rstrip("%"))
    assert summed and predicted and 10 <= measured <= 100  # on the metric's own scale
    assert any("pruned together" in i.value for i in at.info)
    steps = _steps(at)
    assert {"predicted_drop", "measured_drop", "chosen"} <= set(steps.columns)
    assert 1 <= len(steps) <= 3 and steps["chosen"].sum() == 1


def test_budget_kind_is_a_choice(analysed):
    at = analysed
    radio = at.radio(key=Keys.sens_budget)
    assert radio.options[:2] == ["Overall sparsity", "Largest drop"]
    assert "Speed-up" not in radio.options  # unstructured: zeros make nothing faster
    radio.set_value("Parameters").run()
    assert_clean(at)
    at.slider(key=f"{Keys.sens_target}_params").set_value(0.3).run()
    assert_clean(at)
    assert float(metric(at, "Sparsity (all prunable weights)").rstrip("%")) > 50
    at.number_input(key=Keys.sens_evaluations).set_value(1).run()
    assert_clean(at)
    assert len(_steps(at)) == 1


def test_allocations_compared_in_one_chart(analysed):
    at = analysed
    before = _charts(at)
    at.button(key=Keys.sens_allocations).click().run()
    assert_clean(at)
    assert _charts(at) == before + 1
    chart = [c for c in at.get("plotly_chart") if "owl" in c.proto.spec]
    assert chart, "no chart with the allocations"
