"""Export page: groups, sizes, speed and downloads from channel masks, Prune masks or a recipe."""

from __future__ import annotations

import prunelab
from prunelab.recipes import Recipe
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page

PAGE = "pages/6_Export.py"


def _downloads(at) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def test_channel_pruning_on_the_page_end_to_end():
    at = page(PAGE).run()
    assert_clean(at)
    assert at.radio(key=Keys.export_source).value == "channel pruning here"
    assert not at.warning
    assert metric(at, "Shrunk parameters")
    assert "recipe (.yaml)" in _downloads(at)
    at.button(key=Keys.export_speed_run).click().run()
    assert_clean(at)
    report = at.session_state[Keys.export_speed_result][1]
    assert set(report["variant"]) == {"dense", "masked", "shrunk"}
    at.button(key=Keys.export_prepare).click().run()
    assert_clean(at)
    labels = _downloads(at)
    assert any(label.startswith("pt2") and "shrunk" in label for label in labels)
    assert any(label.startswith("sparse") for label in labels)
    assert any("torch.export.load" in c.value for c in at.code)


def test_unstructured_prune_masks_explain_and_offer_channels():
    at = page(PAGE)
    at.session_state[Keys.masks] = prunelab.prune(
        prunelab.zoo.load("sample:digits-cnn").model, "global-magnitude", sparsity=0.5
    )
    at.session_state[Keys.masks_label] = "global-magnitude at 50%"
    at.run()
    assert_clean(at)
    assert at.radio(key=Keys.export_source).value == "masks from the Prune page"
    assert "cannot shrink" in at.warning[0].value and "channel pruning here" in at.warning[0].value
    at.selectbox(key=Keys.export_bits).select(4).run()
    assert_clean(at)
    assert "Best sparse mix" in [m.label for m in at.metric]


def test_recipe_upload(upload):
    recipe = Recipe(strategy="weight-norm-channel", granularity="channel", default_sparsity=0.25)
    upload("recipe.yaml", recipe.dumps().encode())
    at = page(PAGE).run()
    at.radio(key=Keys.export_source).set_value("a recipe file").run()
    assert_clean(at)
    assert any("recipe recipe.yaml" in c.value for c in at.caption)


def test_bad_recipe_is_an_error_not_a_traceback(upload):
    upload("recipe.yaml", b"strategy: [not, a, recipe")
    at = page(PAGE).run()
    at.radio(key=Keys.export_source).set_value("a recipe file").run()
    assert not at.exception
    assert "Could not build the masks" in at.error[0].value
