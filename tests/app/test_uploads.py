"""Bad uploads and unfitting data show st.error, never an exception, and the page recovers."""

from __future__ import annotations

import io

import torch

from prunelab import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import assert_clean, metric, page


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _upload_page(upload, name, payload, *, arch=None, trust=False, path="pages/2_Prune.py"):
    upload(name, payload)
    at = page(path).run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    if arch is not None:
        at.sidebar.selectbox(key=Keys.upload_arch).select(arch).run()
    if trust:
        at.sidebar.checkbox(key=Keys.trust).check().run()
    return at


def _errors(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "expected an error message"
    return " ".join(e.value for e in at.error)


def test_a_file_that_is_not_a_model(upload):
    at = _upload_page(upload, "notes.pt", b"this is not a checkpoint")
    assert "Could not load" in _errors(at)


def test_a_state_dict_for_the_wrong_architecture(upload):
    state = zoo.load("sample:digits-mlp").model.state_dict()
    at = _upload_page(upload, "mlp.pt", _saved(state), arch="sample:digits-cnn")
    text = _errors(at)
    assert "missing keys: conv1.weight" in text and "unexpected keys: fc1.weight" in text


def test_a_pickled_module_needs_the_trust_checkbox(upload):
    payload = _saved(zoo.load("sample:digits-cnn").model)
    at = _upload_page(upload, "whole.pt", payload)
    assert "trust" in _errors(at).lower()
    at.sidebar.checkbox(key=Keys.trust).check().run()
    assert_clean(at)
    assert metric(at, "Sparsity") == "50.0%"


def test_a_good_state_dict_upload_prunes(upload):
    state = zoo.load("sample:digits-cnn").model.state_dict()
    at = _upload_page(upload, "cnn.pt", _saved(state), arch="sample:digits-cnn")
    assert_clean(at)
    at.slider(key=Keys.sparsity).set_value(0.7).run()
    assert metric(at, "Sparsity") == "70.0%"


def test_data_that_does_not_fit_the_model_then_recovers():
    at = page("pages/2_Prune.py").run()
    at.sidebar.selectbox(key=Keys.data_choice).select("sample:sentiment").run()
    assert "pick data that fits the model" in _errors(at)
    at.sidebar.selectbox(key=Keys.data_choice).select("sample:digits").run()
    assert_clean(at)
