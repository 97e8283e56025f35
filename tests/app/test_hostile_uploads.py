"""Hostile files (issue 9) in the app: every case of the corpus shows st.error, never an
exception; no code from a file runs; uploads touch only a private temporary directory that is
gone afterwards; and the page is usable again once a good model or source is picked.

The corpus and its stages are in tests/test_hostile_files.py. Model files go through the
sidebar's upload on the Prune page; recipes through the recipe upload of the Export page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.ui import cache
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, page
from tests.test_hostile_files import (
    ARCH,
    MARKER,
    MODEL_CASES,
    RECIPE_CASES,
    _saved,
    _state,
    ids,
)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at an empty folder, to see what uploads leave behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    cache.load_upload.clear()  # each case really loads its bytes
    yield folder
    cache.load_upload.clear()


def _left(folder: Path) -> list[str]:
    # torch may put its own caches (torchinductor_<user>) in the temp folder: not uploads
    return [p.name for p in folder.iterdir() if not p.name.startswith("torchinductor")]


def _errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "expected an error message"
    return " ".join(e.value for e in at.error)


def _upload_model(upload, payload: bytes):
    upload("model.pt", payload)
    at = page("pages/2_Prune.py").run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select(ARCH).run()
    return at


def _recovers_with_a_sample(at) -> None:
    at.sidebar.radio(key=Keys.model_source).set_value("Sample model").run()
    assert_clean(at)


@pytest.mark.parametrize("case", MODEL_CASES, ids=ids(MODEL_CASES))
def test_model_upload(case, upload, tmp_path, private_tmp):
    at = _upload_model(upload, case.build(tmp_path))
    assert case.expect in _errors(at)
    assert not (tmp_path / MARKER).exists()
    assert not _left(private_tmp), "the upload was left on disk"
    _recovers_with_a_sample(at)


def test_an_upload_over_the_size_cap(upload, tmp_path, private_tmp, monkeypatch):
    # Streamlit refuses uploads over server.maxUploadSize; zoo's own cap is the same check
    monkeypatch.setattr(data_lib, "MAX_FILE_BYTES", 1000)
    at = _upload_model(upload, _saved(_state()))
    assert "are accepted" in _errors(at)
    assert not _left(private_tmp)
    _recovers_with_a_sample(at)


def test_a_good_upload_is_read_from_a_private_folder_then_deleted(upload, private_tmp, monkeypatch):
    specs, load = [], zoo.load

    def spy(spec, **kwargs):
        specs.append((spec, kwargs))
        return load(spec, **kwargs)

    monkeypatch.setattr(zoo, "load", spy)
    at = _upload_model(upload, _saved(_state()))
    assert_clean(at)
    uploads = [(s, kw) for s, kw in specs if s.startswith("file:")]
    assert uploads, specs
    spec, kwargs = uploads[0]
    assert kwargs == {"trust": False}  # weights_only unless the user ticks trust
    path = Path(spec.removeprefix("file:").split("?")[0])
    assert path.parent.parent == private_tmp and path.parent.name.startswith("prunelab-upload-")
    assert not path.parent.exists()
    assert not _left(private_tmp)


@pytest.mark.parametrize("case", RECIPE_CASES, ids=ids(RECIPE_CASES))
def test_recipe_upload(case, upload, tmp_path):
    upload("recipe.yaml", case.build(tmp_path))
    at = page("pages/6_Export.py").run()
    at.radio(key=Keys.export_source).set_value("a recipe file").run()
    assert case.expect in _errors(at)
    assert not (tmp_path / MARKER).exists()
    at.radio(key=Keys.export_source).set_value("channel pruning here").run()
    assert_clean(at)
