"""The Prune page with head-taylor on the sample language model: the heads x layers picture
shows the gradient scores on the chosen token data, titled as such."""

from __future__ import annotations

import pytest

from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, page


@pytest.mark.slow
def test_prune_page_maps_head_taylor_scores_of_the_language_model():
    at = page("pages/2_Prune.py")
    at.session_state[Keys.sample] = "sample:pydoc-gpt"
    at.session_state[Keys.strategy] = "head-taylor"  # one run: each costs an evaluation
    at.session_state[Keys.sparsity] = 0.25
    at.run()
    assert_clean(at)
    assert at.sidebar.selectbox(key=Keys.strategy).value == "head-taylor"
    (chart,) = [c for c in at.get("plotly_chart") if "Attention heads by" in c.proto.spec]
    assert "Attention heads by head-taylor" in chart.proto.spec
    spec = chart.proto.spec  # plotly's JSON writes "/" as \u002f: |dL/d gate| is not findable
    assert "gate|, per-layer normalised" in spec and "4 of 16 heads pruned" in spec
    assert any("Michel et al." in m.value for m in [*at.caption, *at.markdown])
