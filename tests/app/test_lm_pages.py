"""The Model, Prune and Export pages on the sample language model (without data: the
token data spec and perplexity come separately)."""

from __future__ import annotations

import pytest

import prunelab
from prunelab.io import zoo
from prunelab.ui.sidebar import NO_DATA
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, page

SPEC = "sample:pydoc-gpt"


def _on_lm(path: str, **state):
    at = page(path)
    at.session_state[Keys.sample] = SPEC
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    # the model's own data may not be loadable here: judge the pages on the weights alone
    at.sidebar.selectbox(key=Keys.data_choice).select(NO_DATA).run()
    assert_clean(at)
    return at


@pytest.mark.slow
def test_model_page_shows_the_language_models_layers_and_card():
    at = _on_lm("pages/1_Model.py")
    assert at.title[0].value == "Model: pydoc-gpt"
    layers = at.dataframe[0].value["fqn"].tolist()
    assert layers[0] == "transformer.h.0.attn.c_attn.weight" and len(layers) == 16
    assert any(e.label == "Model card" for e in at.expander)


@pytest.mark.slow
def test_prune_page_shows_next_tokens_dense_beside_pruned():
    at = _on_lm("pages/2_Prune.py")
    box = at.text_input(key="nexttoken_text")
    table = at.dataframe[-1].value
    assert list(table.columns) == ["rank", "dense", "dense p", "pruned", "pruned p"]
    box.set_value("def").run()
    assert_clean(at)
    assert at.dataframe[-1].value["dense"].tolist() != table["dense"].tolist()


@pytest.mark.slow
def test_export_page_offers_a_save_pretrained_directory():
    masks = prunelab.prune(zoo.load(SPEC).model, "layer-magnitude", sparsity=0.5)
    at = _on_lm(
        "pages/6_Export.py", **{Keys.masks: masks, Keys.masks_label: "layer-magnitude at 50%"}
    )
    at.button(key=Keys.export_prepare).click().run()
    assert_clean(at)
    assert any("hf:pydoc-gpt-pruned" in c.value for c in at.code)
    assert any("save_pretrained directory" in c.value for c in at.caption)
