"""The Model, Prune and Export pages on the sample language model (without data: the
token data spec and perplexity come separately)."""

from __future__ import annotations

import pytest

import prunelab
from prunelab.io import zoo
from prunelab.ui.sidebar import NO_DATA
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page

SPEC = "sample:pydoc-gpt"


def _on_lm(path: str, **state):
    at = _with_text(path, **state)
    # judge the pages on the weights alone, as with a model whose data cannot be loaded
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


# -- with the model's own token data (sample:pydoc-text): perplexity, not accuracy ----------


def _with_text(path: str, **state):
    at = page(path)
    at.session_state[Keys.sample] = SPEC
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert_clean(at)
    return at


def test_state_dict_architectures_leave_language_models_out():
    from prunelab.ui.sidebar import state_dict_samples

    assert SPEC not in state_dict_samples() and "sample:digits-cnn" in state_dict_samples()


@pytest.mark.slow
def test_model_and_prune_pages_read_perplexity_not_accuracy():
    at = _with_text("pages/1_Model.py")
    assert "%" not in metric(at, "Perplexity (dense)")
    assert float(metric(at, "Perplexity (dense)")) > 1
    assert not any("ccuracy" in m.label for m in at.metric)
    at = _with_text("pages/2_Prune.py")
    value = metric(at, "Perplexity")
    assert "%" not in value and float(value) > 1
    assert not any("ccuracy" in m.label for m in at.metric)
    assert any("Perplexity is exp" in c.value for c in at.caption)


@pytest.mark.slow
def test_sparsegpt_on_the_prune_page_says_new_weights_plus_masks():
    at = _with_text("pages/2_Prune.py")
    at.sidebar.selectbox(key=Keys.strategy).select("sparsegpt").run()
    assert_clean(at)
    assert any("new weights plus masks" in i.value for i in at.info)
    assert float(metric(at, "Perplexity")) > 1


@pytest.mark.slow
def test_sensitivity_on_a_subset_in_perplexity_with_the_block_heatmap():
    at = _with_text("pages/4_Sensitivity.py")
    assert at.number_input(key=Keys.sens_subset).value == 32  # a language model's default
    layers = at.multiselect[0]
    layers.set_value(
        [f for f in layers.value if f.startswith(("transformer.h.0.", "transformer.h.1."))]
    )
    at.select_slider(key=Keys.sens_levels).set_value(3)
    at.number_input(key=Keys.sens_subset).set_value(16)
    at.button(key=Keys.sens_run).click().run()
    assert_clean(at)
    assert at.get("plotly_chart")
    assert any("block by block" in c.value for c in at.caption)  # figures.block_heatmap
    assert any("perplexity gets worse" in c.value for c in at.caption)
    # the recipe's measurement is on the table's 16 sequences, like its baseline and the
    # planner's joint measurements (it was once on all of the data, against the subset's dense)
    measured = next(m for m in at.metric if m.label == "Measured perplexity")
    steps = next(d.value for d in at.dataframe if "measured_drop" in d.value.columns)
    chosen = steps[steps["chosen"]].iloc[0]
    assert float(measured.delta.split()[0].lstrip("+")) == pytest.approx(
        chosen["measured_drop"], abs=0.01
    )


@pytest.mark.slow
def test_learn_says_what_a_language_model_cannot_do_here():
    # the Train page trains language models: tests/app/test_train_lm.py
    at = _with_text("pages/7_Learn.py")
    assert any("language model" in i.value for i in at.info)


@pytest.mark.slow
def test_export_page_shrinks_head_masks_of_the_language_model():
    masks = prunelab.prune(zoo.load(SPEC).model, "head-magnitude", sparsity=0.25)
    at = _on_lm(
        "pages/6_Export.py", **{Keys.masks: masks, Keys.masks_label: "head-magnitude at 25%"}
    )
    assert not any("cannot shrink" in w.value for w in at.warning)
