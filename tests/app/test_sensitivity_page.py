"""The Sensitivity page: run, heatmap, compare strategies, edit the recipe, download it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

import prunelab
from prunelab import sweeps
from prunelab.io import zoo
from prunelab.io.recipes import Recipe
from prunelab.sweeps import Estimate, runner
from prunelab.ui import cache
from prunelab.ui.state import Keys
from tests.app.conftest import ROOT, assert_clean, metric, page


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
    assert float(metric(at, "Measured accuracy").rstrip("%")) > 50  # percent, as everywhere


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
        float(metric(at, "Measured accuracy").rstrip("%")) / 100, abs=1e-4
    )
    assert set(recipe.layers) == {"conv1.weight", "conv2.weight", "fc.weight"}
    assert recipe.overall_sparsity(zoo.load("sample:digits-cnn").model) == pytest.approx(
        0.5, abs=0.01
    )


def test_compare_strategies(analysed):
    at = analysed
    at.button(key=Keys.sens_compare_run).click().run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) >= 4


# -- long runs: estimate, confirmation, cancel, resume, start over -------------------------
# each test uses its own number of samples, so no result remembered by another test is reused


def _configured(subset: int):
    at = page("pages/4_Sensitivity.py").run()
    at.select_slider(key=Keys.sens_levels).set_value(3)
    at.number_input(key=Keys.sens_subset).set_value(subset)
    return at.run()


def _checkpoints(at) -> list[Path]:
    return sorted(at.session_state[Keys.jobs_folder].path.glob(f"{Keys.sens_job}-*.jsonl"))


@pytest.fixture
def points(monkeypatch):
    """Counts the evaluated (layer, sparsity) points."""
    calls = []
    real = runner._Runner.masked_metrics

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runner._Runner, "masked_metrics", counted)
    return calls


@pytest.fixture
def cancel_after(monkeypatch):
    """Cancel the next run once ``rows`` rows are done, as a click on Cancel does: Streamlit
    stops the script inside its next call, the progress bar's update after a finished row."""

    def arm(rows: int) -> None:
        updates = []
        real = DeltaGenerator.progress

        def progress(self, *args, **kwargs):
            updates.append(1)
            # one update per finished row, after it is saved (st.progress, which draws the
            # bar, was bound at import and is not counted)
            if len(updates) == rows:
                monkeypatch.setattr(DeltaGenerator, "progress", real)
                raise StopException
            return real(self, *args, **kwargs)

        monkeypatch.setattr(DeltaGenerator, "progress", progress)

    return arm


def test_the_estimate_is_shown_and_a_short_run_needs_no_confirmation():
    at = _configured(32)
    assert_clean(at)
    estimate = [c.value for c in at.caption if c.value.startswith("Estimate: ")]
    assert estimate and estimate[0].startswith("Estimate: 9 evaluations x ")
    assert not at.warning
    assert [c.key for c in at.checkbox] == [Keys.sens_early_stop]  # no confirmation asked
    assert not at.button(key=Keys.sens_run).disabled
    folder = at.session_state[Keys.jobs_folder].path
    assert folder.is_relative_to(tempfile.gettempdir()) and not folder.is_relative_to(ROOT)
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_long_run_waits_for_confirmation(monkeypatch, points):
    monkeypatch.setattr(sweeps, "estimate_sensitivity", lambda *a, **k: Estimate(9, 20.0))
    at = _configured(48)
    assert "about 3 min 0 s" in at.warning[0].value
    assert at.button(key=Keys.sens_run).disabled
    at.checkbox(key=Keys.sens_confirm).check().run()
    assert not at.button(key=Keys.sens_run).disabled
    at.button(key=Keys.sens_run).click().run()
    assert_clean(at)
    assert len(points) == 9 and at.get("plotly_chart")


def test_cancel_keeps_finished_rows_and_resume_continues_from_them(cancel_after, points):
    at = _configured(64)
    cancel_after(3)
    at.button(key=Keys.sens_run).click().run()
    assert len(points) == 3 and not at.get("plotly_chart")
    at.run()
    assert_clean(at)
    assert at.button(key=Keys.sens_resume).label == "Resume (3 of 9 done)"
    assert any("another 3 are done already" in c.value for c in at.caption)
    at.button(key=Keys.sens_resume).click().run()
    assert_clean(at)
    assert len(points) == 9  # the three saved rows were not evaluated again
    assert at.get("plotly_chart") and len(_checkpoints(at)) == 1  # finished, kept


def test_a_result_dropped_from_the_shared_store_is_read_back_not_rerun(points):
    at = _configured(72)
    at.button(key=Keys.sens_run).click().run()
    assert len(points) == 9 and at.get("plotly_chart")
    cache._results()._store.clear()  # as when other sessions push it out
    at.run()
    assert_clean(at)
    assert len(points) == 9 and at.get("plotly_chart")  # from the finished checkpoint


def test_start_over_discards_the_saved_rows(cancel_after, points):
    at = _configured(80)
    cancel_after(2)
    at.button(key=Keys.sens_run).click().run()
    at.run()
    points.clear()
    at.button(key=Keys.sens_restart).click().run()
    assert_clean(at)
    assert len(points) == 9 and at.get("plotly_chart")


def test_a_damaged_checkpoint_is_an_error_and_start_over_recovers(cancel_after):
    at = _configured(96)
    cancel_after(2)
    at.button(key=Keys.sens_run).click().run()
    [checkpoint] = _checkpoints(at)
    checkpoint.write_bytes(b"\x00 not a checkpoint")
    at.run()
    assert not at.exception
    assert (
        "cannot be used" in at.error[0].value and "not a prunelab checkpoint" in at.error[0].value
    )
    at.button(key=Keys.sens_restart).click().run()
    assert_clean(at)
    assert at.get("plotly_chart")


def test_an_error_during_the_run_is_shown_not_raised(monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("the data gave 3 samples on one pass and 2 on the next")

    monkeypatch.setattr(runner._Runner, "masked_metrics", broken)
    at = _configured(112)
    at.button(key=Keys.sens_run).click().run()
    assert not at.exception
    assert at.error[0].value == (
        "The run could not finish: the data gave 3 samples on one pass and 2 on the next"
    )
    at.run()
    assert not at.exception and at.button(key=Keys.sens_run)  # the page is still usable


# -- issue 16: the table shows the file's numbers; the layer choice follows the model --------


def test_recipe_table_shows_exactly_the_numbers_of_the_file(analysed):
    at = analysed
    shown = at.dataframe[0].value.set_index("layer")["sparsity"].to_dict()
    recipe = Recipe.loads(next(c.value for c in at.code if "prunelab.recipe/1" in c.value))
    assert shown == dict(recipe.layers)
    # one rounding, applied to the recipe itself, and the column displays all of its digits
    assert all(round(value, 3) == value for value in shown.values())
    assert any(0 < value < 1 for value in shown.values())
    config = at.dataframe[0].proto.columns
    assert '"format":"%.3f"' in config.replace(" ", "")
    assert '"step":0.001' in config.replace(" ", "")


def _sens_layers(at):
    return next(m for m in at.multiselect if m.label == "Layers")


def test_layer_choice_follows_the_model():
    at = page("pages/4_Sensitivity.py").run()
    assert_clean(at)
    cnn = zoo.load("sample:digits-cnn").model
    assert _sens_layers(at).value == [t.fqn for t in prunelab.targets(cnn)]
    at.sidebar.selectbox(key=Keys.sample).set_value("sample:digits-resnet").run()
    assert_clean(at)
    resnet = [t.fqn for t in prunelab.targets(zoo.load("sample:digits-resnet").model)]
    assert len(resnet) == 9
    assert _sens_layers(at).value == resnet  # was ["fc.weight"] alone


def test_channel_strategy_leaves_the_classifier_out_and_says_so():
    at = page("pages/4_Sensitivity.py").run()
    at.selectbox(key=Keys.strategy + "_s").set_value("weight-norm-channel").run()
    assert_clean(at)
    assert [c.value for c in at.caption if c.value.startswith("Left out fc.weight")]
    at.select_slider(key=Keys.sens_levels).set_value(3)
    at.number_input(key=Keys.sens_subset).set_value(96)
    at.button(key=Keys.sens_run).click().run()
    assert_clean(at)
    recipe = Recipe.loads(next(c.value for c in at.code if "prunelab.recipe/1" in c.value))
    assert set(recipe.layers) == {"conv1.weight", "conv2.weight"}
    assert not recipe.prune_outputs and "fc.weight" in recipe.provenance.left_out
    at.checkbox(key=Keys.sens_prune_outputs).check().run()
    assert_clean(at)
    assert not [c.value for c in at.caption if c.value.startswith("Left out")]
