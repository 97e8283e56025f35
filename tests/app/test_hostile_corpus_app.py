"""Issue 22's hostile files through the app (corpus: tests/hostile_corpus.py): st.error, never
an exception; no code from a file runs; nothing is created or downloaded on the server."""

from __future__ import annotations

import pytest

from prunelab.runtime import memory
from prunelab.ui import cache
from prunelab.ui.state import Keys
from tests import hostile_corpus as corpus
from tests.app.conftest import assert_clean, page
from tests.hostile_corpus import ARCH, MARKER


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "512MiB")
    cache.load_upload.clear()
    yield
    cache.load_upload.clear()


def _errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "expected an error message"
    return " ".join(e.value for e in at.error)


def _upload(upload, name: str, payload: bytes, arch: str | None):
    upload(name, payload)
    at = page("pages/2_Prune.py").run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    if arch is not None:
        at.sidebar.selectbox(key=Keys.upload_arch).select(arch).run()
    return at


@pytest.mark.parametrize(
    ("build", "name", "arch", "expect"),
    [
        (corpus.pt2_guard_code, "model.pt2", None, "trust"),
        (corpus.pt2_opaque_constant, "model.pt2", None, "trust"),
        (corpus.pt2_pickled_weight, "model.pt2", ARCH, "stored as a pickle"),
        (corpus.pt_compressed_bomb, "model.pt", ARCH, "unpacks to 256.0 MiB"),
        (corpus.pt_shared_tuple_key, "model.pt", ARCH, "shared parts"),
    ],
    ids=["pt2-guard-code", "pt2-opaque-constant", "pt2-pickled-weight", "pt-bomb", "tuple-key"],
)
def test_hostile_model_uploads(build, name, arch, expect, upload, tmp_path):
    at = _upload(upload, name, build(tmp_path), arch)
    assert expect in _errors(at)
    assert not (tmp_path / MARKER).exists()


def test_a_pt2_with_an_architecture_loads_its_weights_and_runs_nothing(upload, tmp_path):
    at = _upload(upload, "model.pt2", corpus.pt2_symbolic_size(tmp_path), ARCH)
    assert_clean(at)
    assert not (tmp_path / MARKER).exists()


def test_the_dataset_folder_box_cannot_add_options(tmp_path):
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.data_choice).select("torchvision:MNIST").run()
    wanted = tmp_path / "created" / "by" / "web"
    at.sidebar.text_input(key=Keys.data_root).input(f"{wanted}&download=1").run()
    assert "cannot be used" in _errors(at)
    at.sidebar.text_input(key=Keys.data_root).input(str(wanted)).run()
    assert "does not exist" in _errors(at)
    assert not (tmp_path / "created").exists()


def test_a_recipe_alias_bomb(upload, tmp_path):
    upload("recipe.yaml", corpus.recipe_alias_bomb(tmp_path))
    at = page("pages/6_Export.py").run()
    at.radio(key=Keys.export_source).set_value("a recipe file").run()
    assert "repeats a list or mapping" in _errors(at)
