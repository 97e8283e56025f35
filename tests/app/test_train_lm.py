"""The Train page on the sample language model: next tokens learnt, perplexity shown."""

from __future__ import annotations

import pytest

from prunelab.ui.state import Keys
from prunelab.ui.views.train import LM_SUFFIX
from tests.app.conftest import assert_clean, metric, page

PAGE = "pages/5_Train.py"


@pytest.mark.slow
def test_train_page_fine_tunes_a_language_model_and_reads_perplexity():
    at = page(PAGE)
    at.session_state[Keys.train_bits] = [8]  # one quantized evaluation is enough here
    at.run()  # the app's default classifier first: its settings must not carry over
    at.sidebar.selectbox(key=Keys.sample).set_value("sample:pydoc-gpt").run()
    assert_clean(at)
    assert not any("not supported" in i.value for i in at.info)
    # the language model's own defaults, not the classifier's 3 epochs at 0.003
    assert at.number_input(key=Keys.train_epochs + LM_SUFFIX).value == 1
    assert at.select_slider(key=Keys.train_lr + LM_SUFFIX).value == 0.001
    at.number_input(key=Keys.train_sequences).set_value(64)  # 4 steps a run: a quick test
    at.button(key=Keys.train_run).click().run()
    assert_clean(at)
    dense = float(metric(at, "Dense perplexity"))
    one_shot = float(metric(at, "One-shot (no training)"))
    tuned = float(metric(at, "Fine-tuned"))
    assert 1 < dense < one_shot and tuned < one_shot  # lower is better
    rise = next(m for m in at.metric if m.label == "Fine-tuned")
    assert rise.delta.startswith("+") and "%" in rise.delta  # a rise from dense, and its ratio
    assert len(at.get("plotly_chart")) == 3
    table = at.dataframe[-1].value
    assert "perplexity" in table.columns and "accuracy" not in table.columns
    assert table["weights"].tolist() == ["float32 (as trained)", "8 bits"]
