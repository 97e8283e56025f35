"""The Prune page says when channel pruning leaves the output layer out, and can include it."""

from __future__ import annotations

from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page


def _channel_page():
    at = page("pages/2_Prune.py").run()
    assert_clean(at)
    at.selectbox(key=Keys.strategy).set_value("weight-norm-channel").run()
    assert_clean(at)
    return at


def _left_out_lines(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Left out")]


def test_channel_pruning_leaves_the_classifier_out_and_says_so():
    at = _channel_page()
    assert _left_out_lines(at) == [
        "Left out fc.weight: its output channels are the model's outputs, so channel pruning "
        "would delete outputs (classes) outright."
    ]
    assert metric(at, "Accuracy") == "86.67%"  # was 53.1% with the classifier's rows pruned
    masks = at.session_state[Keys.masks]
    assert bool(masks["fc.weight"].all())
    assert "fc.weight" in at.session_state[Keys.recipe]().provenance.left_out

    at.checkbox(key=Keys.prune_outputs).check().run()
    assert_clean(at)
    assert not _left_out_lines(at)
    assert metric(at, "Accuracy") == "53.11%"
    masks = at.session_state[Keys.masks]
    assert int(masks["fc.weight"].any(dim=1).sum()) == 5
    assert at.session_state[Keys.recipe]().prune_outputs


def test_no_line_and_no_box_for_unstructured_pruning():
    at = page("pages/2_Prune.py").run()
    assert_clean(at)
    assert not _left_out_lines(at)
    assert not [c for c in at.checkbox if c.key == Keys.prune_outputs]
