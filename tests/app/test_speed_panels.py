"""The Export page times honestly: spread shown, no made-up speed-ups."""

from __future__ import annotations

from prunelab.analysis.speed import NO_DIFFERENCE
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, page


def test_export_speed_panel_shows_spread_and_verdicts():
    at = page("pages/6_Export.py").run()
    at.multiselect(key=Keys.export_batches).set_value([4])
    at.button(key=Keys.export_speed_run).click().run()
    assert_clean(at)
    (report,) = at.session_state[Keys.export_speed_result].values()
    report = report.set_index("variant")
    assert {"q1_ms", "q3_ms", "verdict"} <= set(report.columns)
    assert report.loc["masked", "verdict"] == NO_DIFFERENCE
    assert any("interleaved rounds" in c.value for c in at.caption)
