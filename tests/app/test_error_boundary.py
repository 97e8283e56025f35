"""One error boundary for every page (issue 22): whatever a page raises ends as ``st.error``,
never as Streamlit's exception box with a traceback, and never shows a path on the server."""

from __future__ import annotations

import io

import pytest
import streamlit
import torch

from prunelab.io import zoo
from prunelab.ui.state import Keys
from tests.app.conftest import page

PAGES = [
    "app.py",
    "pages/1_Model.py",
    "pages/2_Prune.py",
    "pages/3_Activations.py",
    "pages/4_Sensitivity.py",
    "pages/5_Train.py",
    "pages/6_Export.py",
    "pages/7_Learn.py",
]
SECRET = "/srv/prunelab/private/uploads"


def _raising(exc: Exception):
    def title(*args, **kwargs):
        raise exc

    return title


def _shown(at) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "expected st.error"
    return " ".join(e.value for e in at.error)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_turns_an_exception_into_st_error(path, monkeypatch):
    # st.title is called near the top of every page: an error there stands for any error
    monkeypatch.setattr(streamlit, "title", _raising(ValueError(f"{SECRET}/m.pt does not fit")))
    at = page(path).run()
    shown = _shown(at)
    assert "m.pt does not fit" in shown and SECRET not in shown
    assert not at.expander or all(e.label != "Details for a bug report" for e in at.expander)

    monkeypatch.setattr(streamlit, "title", _raising(KeyError("weights")))  # a bug
    at.run()
    assert "This is a bug in prunelab, not a problem with your input" in _shown(at)
    (details,) = [e for e in at.expander if e.label == "Details for a bug report"]
    text = details.code[0].value
    assert text.startswith("KeyError: 'weights'")
    assert "in title" in text and "errors.py" not in text  # frames of the page, by name
    assert "/" not in text  # files by name, not where they are on the server


@pytest.fixture(scope="module")
def program() -> bytes:
    """A correct torch.export program of a sample model (its batch dimension dynamic)."""
    bundle = zoo.load("sample:digits-mlp")
    exported = torch.export.export(
        bundle.model.eval(),
        (bundle.example_input(batch_size=2),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("path", PAGES)
def test_a_pt2_without_its_architecture_on_every_page(path, program, upload):
    upload("model.pt2", program)
    at = page(path).run()
    at.sidebar.radio(key=Keys.model_source).set_value("Upload a file").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(e.value for e in at.error)
    assert "/tmp" not in shown
    # loading the program would run its code: every page says how to read its weights alone
    assert "To prune it, pick its architecture under 'Architecture of a state_dict" in shown
