"""Export page: groups, sizes, speed and downloads from channel masks, Prune masks or a recipe."""

from __future__ import annotations

import io

import torch

import prunelab
from prunelab.io.recipes import Recipe
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page

PAGE = "pages/6_Export.py"


def _downloads(at) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def test_channel_pruning_on_the_page_end_to_end():
    at = page(PAGE).run()
    assert_clean(at)
    assert at.radio(key=Keys.export_source).value == "channel pruning here"
    assert not [w for w in at.warning if "cannot shrink" in w.value]
    assert metric(at, "Shrunk parameters")
    assert "recipe (.yaml)" in _downloads(at)
    at.button(key=Keys.export_speed_run).click().run()
    assert_clean(at)
    (report,) = at.session_state[Keys.export_speed_result].values()  # one kept per session
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
        prunelab.io.zoo.load("sample:digits-cnn").model, "global-magnitude", sparsity=0.5
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


def test_the_page_shows_the_accuracy_of_what_you_download_beside_dense():
    at = page(PAGE).run()
    assert_clean(at)
    # channel pruning here leaves the classifier whole: 86.67%, not the 53.11% of all 10 rows
    assert metric(at, "Accuracy: dense") == "98.00%"
    assert metric(at, "Accuracy: download") == "86.67%"
    assert [w.value for w in at.warning if w.value.startswith("Large drop")]
    at.slider(key=Keys.export_sparsity).set_value(0.1).run()
    assert_clean(at)
    shown = float(metric(at, "Accuracy: download").rstrip("%"))
    assert shown > 93.0
    assert not [w.value for w in at.warning if w.value.startswith("Large drop")]


def test_the_shown_accuracy_is_that_of_the_downloaded_file(tmp_path):
    bundle = prunelab.io.zoo.load("sample:digits-cnn")
    strategy = prunelab.get_strategy("weight-norm-channel", prune_outputs=True)
    masks = prunelab.prune(bundle.model, strategy, sparsity=0.5)
    at = page(PAGE)
    at.session_state[Keys.masks] = masks
    at.session_state[Keys.masks_label] = "all ten classes' rows pruned too"
    at.run()
    at.button(key=Keys.export_prepare).click().run()
    assert_clean(at)
    warning = next(w.value for w in at.warning if w.value.startswith("Large drop"))
    assert "53.11%" in warning and "98.00%" in warning
    # the state_dict the page offers, loaded back and evaluated on the same data
    (files,) = at.session_state[Keys.export_files].values()  # one kept per session
    path = tmp_path / "model.pt"
    path.write_bytes(files["state_dict"][0])
    fresh = prunelab.io.zoo.load("sample:digits-cnn").model
    fresh.load_state_dict(torch.load(path, weights_only=True))
    test = prunelab.io.data.load(bundle.default_data)
    accuracy = prunelab.evaluate(fresh.eval(), test)["accuracy"]
    # and the pt2 (the shrunk model) scores the same, so one number covers every format
    program = torch.export.load(io.BytesIO(files["pt2"][0])).module()
    assert prunelab.evaluate(program, test)["accuracy"] == accuracy
    shown = metric(at, "Accuracy: download")
    assert shown == f"{accuracy:.2%}" == "53.11%"


def test_masked_and_shrunk_downloads_are_shown_apart_when_they_differ():
    # BatchNorm after a pruned channel still adds its shift in the masked model; the shrunk
    # one drops the channel with its BatchNorm, so the two files score differently
    at = page(PAGE).run()
    at.sidebar.selectbox(key=Keys.sample).set_value("sample:digits-resnet").run()
    assert_clean(at)
    masked = metric(at, "Accuracy: state_dict, sparse")
    shrunk = metric(at, "Accuracy: pt2, shrunk")
    assert masked != shrunk
    bundle = prunelab.io.zoo.load("sample:digits-resnet")
    test = prunelab.io.data.load(bundle.default_data)
    pruned = prunelab.prune(bundle.model, "weight-norm-channel", sparsity=0.5)
    small = prunelab.shrink(bundle.model, pruned, example_input=bundle.example_input())
    assert shrunk == f"{prunelab.evaluate(small.eval(), test)['accuracy']:.2%}"
    assert masked == f"{prunelab.evaluate(bundle.model, test, masks=pruned)['accuracy']:.2%}"
