"""Bad uploads and unfitting data show st.error, never an exception, and the page recovers."""

from __future__ import annotations

import io
import tempfile

import pytest
import torch
from streamlit.delta_generator import DeltaGenerator

from prunelab.io import data as data_lib
from prunelab.io import zoo
from prunelab.ui import cache, sidebar
from prunelab.ui.state import Keys
from tests.app.conftest import FakeUpload, assert_clean, metric, page


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


def test_a_pickled_module_is_refused_unless_the_operator_allows_trust(upload, monkeypatch):
    monkeypatch.delenv(sidebar.TRUST_ENV, raising=False)
    payload = _saved(zoo.load("sample:digits-cnn").model)
    at = _upload_page(upload, "whole.pt", payload)
    text = _errors(at)
    # a visitor gets no checkbox to tick, and learns how the operator can allow it
    assert not [c for c in at.sidebar.checkbox if c.key == Keys.trust]
    assert "whole.pt holds a pickled Python object" in text
    assert f"{sidebar.TRUST_ENV}=1" in text and "Tick" not in text


def test_a_visitor_cannot_switch_trust_on_through_session_state(upload, monkeypatch):
    monkeypatch.delenv(sidebar.TRUST_ENV, raising=False)
    payload = _saved(zoo.load("sample:digits-cnn").model)
    upload("whole.pt", payload)
    at = page("pages/2_Prune.py")
    at.session_state[Keys.trust] = True  # what a forged widget value would set
    at.session_state[sidebar._KEPT + Keys.trust] = True
    at.run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    assert f"{sidebar.TRUST_ENV}=1" in _errors(at)


@pytest.mark.parametrize("how", ["environment", "secrets"])
def test_with_trust_allowed_the_checkbox_loads_a_pickled_module(upload, monkeypatch, how):
    monkeypatch.delenv(sidebar.TRUST_ENV, raising=False)
    payload = _saved(zoo.load("sample:digits-cnn").model)
    upload("whole.pt", payload)
    at = page("pages/2_Prune.py")
    if how == "environment":
        monkeypatch.setenv(sidebar.TRUST_ENV, "1")
    else:
        at.secrets[sidebar.TRUST_SECRET] = True
    at.run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    text = _errors(at)
    assert f"Tick '{sidebar.TRUST_LABEL}' in the sidebar" in text
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


# -- uploads stay for the session ------------------------------------------------------------


@pytest.fixture
def once(monkeypatch):
    """Uploaders that hand over their file once, as in a browser: the file uploader of the
    next page (or the next rerun without it) starts empty. ``once(key, name, payload)``."""
    waiting: dict[str, FakeUpload] = {}

    def fake(self, label, *args, key=None, **kwargs):
        return waiting.pop(key, None)

    monkeypatch.setattr(DeltaGenerator, "file_uploader", fake)
    cache.load_upload.clear()

    def give(key: str, name: str, payload: bytes) -> None:
        waiting[key] = FakeUpload(name, payload)

    return give


def _start(path: str = "pages/1_Model.py"):
    # pages are switched relative to the main script, so the session starts there
    at = page("app.py").run()
    return at.switch_page(path).run()


def _sidebar_text(at) -> str:
    return " ".join(m.value for m in at.sidebar.markdown)


def test_an_uploaded_model_stays_on_every_page_until_cleared(once):
    state = zoo.load("sample:digits-mlp").model.state_dict()
    at = _start()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select("sample:digits-mlp").run()
    once(Keys.upload, "my-mlp.pt", _saved(state))
    at.run()
    assert_clean(at)
    assert at.title[0].value == "Model: my-mlp"
    for path in ("pages/2_Prune.py", "pages/3_Activations.py", "app.py", "pages/1_Model.py"):
        at.switch_page(path).run()
        assert_clean(at)
        assert "Using uploaded file **my-mlp.pt**" in _sidebar_text(at), path
    assert at.title[0].value == "Model: my-mlp"
    at.sidebar.button(key=f"{Keys.model_file}_clear").click().run()
    assert "Upload a model file to continue." in [i.value for i in at.sidebar.info]


def test_replacing_an_upload_keeps_the_old_one_until_a_new_one_loads(once):
    at = _start()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select("sample:digits-mlp").run()
    once(Keys.upload, "first.pt", _saved(zoo.load("sample:digits-mlp").model.state_dict()))
    at.run()
    at.sidebar.button(key=f"{Keys.model_file}_replace").click().run()
    assert at.title[0].value == "Model: first"  # still in use while the uploader is open
    other = {k: v * 2 for k, v in zoo.load("sample:digits-mlp").model.state_dict().items()}
    once(Keys.upload, "second.pt", _saved(other))
    at.run()
    assert at.title[0].value == "Model: second"
    at.run()
    assert "Using uploaded file **second.pt**" in _sidebar_text(at)


def test_an_uploaded_data_file_stays_on_every_page(once):
    digits = data_lib.load("sample:digits", limit=40)
    payload = _saved({"x": digits.inputs, "y": digits.labels})
    at = _start()
    at.sidebar.selectbox(key=Keys.data_choice).select(sidebar.UPLOAD_DATA).run()
    once(Keys.data_upload, "forty.pt", payload)
    at.run()
    assert_clean(at)
    for path in ("pages/2_Prune.py", "pages/1_Model.py"):
        at.switch_page(path).run()
        assert_clean(at)
        assert "Using uploaded file **forty.pt**" in _sidebar_text(at)
        assert any("data file:forty.pt (40 samples)" in c.value for c in at.sidebar.caption)


def test_a_torchvision_state_dict_upload_gets_its_classes_and_data(once):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=7).state_dict()
    at = _start()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select("torchvision:resnet18").run()
    at.sidebar.text_input(key=Keys.upload_input).input("3x64x64").run()
    once(Keys.upload, "r18.pt", _saved(state))
    at.run()
    assert_clean(at)
    assert metric(at, "Input") == "3x64x64"
    assert at.session_state[Keys.data_choice] == "sample:digits?input=3x64x64&labels=0&limit=196"
    fc = next(r for r in at.dataframe[0].value.to_dict("records") if r["fqn"] == "fc.weight")
    assert fc["shape"] == "7x512"  # the classifier read off the file


def test_messages_name_the_uploaded_file_not_a_temporary_path(once):
    state = zoo.load("sample:digits-mlp").model.state_dict()
    at = _start("pages/2_Prune.py")
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select("sample:digits-cnn").run()
    once(Keys.upload, "mine.pt", _saved(state))
    at.run()
    text = _errors(at)
    assert "state_dict in mine.pt does not fit sample:digits-cnn" in text
    assert tempfile.gettempdir() not in text and "prunelab-upload-" not in text


def test_a_bad_data_upload_names_the_file_and_the_page_recovers(once):
    at = _start()
    at.sidebar.selectbox(key=Keys.data_choice).select(sidebar.UPLOAD_DATA).run()
    once(Keys.data_upload, "labels.pt", _saved({"y": torch.zeros(3)}))
    at.run()
    text = _errors(at)
    assert "data file labels.pt must hold a dict with a tensor 'x'" in text
    assert tempfile.gettempdir() not in text
    at.sidebar.selectbox(key=Keys.data_choice).select("sample:digits").run()
    assert_clean(at)


def test_nothing_typed_in_the_sidebar_adds_options_to_a_spec(once, monkeypatch, tmp_path):
    # "&trust=1" typed as the input size would turn on unpickling: the code would run
    from tests.test_hostile_files import MARKER, _runs_code

    monkeypatch.delenv(sidebar.TRUST_ENV, raising=False)
    at = _start()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    at.sidebar.selectbox(key=Keys.upload_arch).select("torchvision:resnet18").run()
    at.sidebar.text_input(key=Keys.upload_input).input("3x8x8&trust=1").run()
    once(Keys.upload, "evil.pt", _runs_code(tmp_path))
    at.run()
    assert "input size '3x8x8&trust=1' must be" in _errors(at)
    assert not (tmp_path / MARKER).exists()


def test_a_typed_dataset_folder_cannot_ask_for_a_download(tmp_path):
    at = _start()
    at.sidebar.selectbox(key=Keys.data_choice).select("torchvision:MNIST").run()
    at.sidebar.text_input(key=Keys.data_root).input(f"{tmp_path}/new&download=1").run()
    assert "without ?, & or =" in _errors(at)
    assert not (tmp_path / "new").exists()
