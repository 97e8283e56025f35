"""The Sensitivity page: run, heatmap, compare strategies, edit the recipe, download it."""

from __future__ import annotations

import pytest

from prunelab import zoo
from prunelab.recipes import Recipe
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page


@pytest.fixture
def analysed():
    at = page("pages/4_Sensitivity.py").run()
    assert_clean(at)
    at.select_slider(key=Keys.sens_levels).set_value(3)
    at.number_input(key=Keys.sens_subset).set_value(160)
    at.button(key=Keys.sens_run).click().run()
    assert_clean(at)
    return at


def test_run_shows_heatmap_curves_and_a_recipe(analysed):
    at = analysed
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # heatmap, per-layer curves, recipe bars
    assert metric(at, "Sparsity (all prunable weights)").endswith("%")
    assert float(metric(at, "Measured accuracy")) > 0.5


def test_results_are_kept_for_the_same_settings(analysed):
    again = page("pages/4_Sensitivity.py").run()
    again.select_slider(key=Keys.sens_levels).set_value(3)
    again.number_input(key=Keys.sens_subset).set_value(160)
    again.run()
    assert_clean(again)
    assert len(again.get("plotly_chart")) >= 3  # no button press: the result was remembered


def test_overall_slider_and_edits_change_the_recipe(analysed):
    at = analysed
    low = metric(at, "Sparsity (all prunable weights)")
    at.slider(key=Keys.sens_target).set_value(0.8).run()
    assert_clean(at)
    high = metric(at, "Sparsity (all prunable weights)")
    assert float(high.rstrip("%")) > float(low.rstrip("%"))


def test_download_is_a_valid_recipe_matching_the_edits(analysed):
    at = analysed
    assert at.get("download_button"), "no download button"
    shown = [c.value for c in at.code if "prunelab.recipe/1" in c.value]
    recipe = Recipe.loads(shown[0])
    assert recipe.provenance.model == "sample:digits-cnn"
    assert recipe.provenance.measured == pytest.approx(
        float(metric(at, "Measured accuracy")), abs=1e-4
    )
    assert set(recipe.layers) == {"conv1.weight", "conv2.weight", "fc.weight"}
    assert recipe.overall_sparsity(zoo.load("sample:digits-cnn").model) == pytest.approx(
        0.5, abs=0.01
    )


def test_compare_strategies(analysed):
    at = analysed
    at.button(key="sens_compare_run").click().run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 4
