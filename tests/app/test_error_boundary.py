"""One error boundary for every page (issue 22): whatever a page raises ends as ``st.error``,
never as Streamlit's exception box with a traceback, and never shows a path on the server."""

from __future__ import annotations

import ast
import io

import pytest
import streamlit
import torch

from prunelab import activations
from prunelab.io import zoo
from prunelab.ui import cache
from prunelab.ui.state import Keys
from tests.app.conftest import ROOT, metric, page

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


def _handlers(path) -> list[ast.ExceptHandler]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ExceptHandler)]


def test_pages_catch_nothing_and_the_ui_names_no_tuple_of_user_errors():
    # which exceptions are the user's is decided once, by prunelab.errors.user_message (through
    # the boundary); page logic says what it was doing (failing_as) instead of catching
    assert {p: len(_handlers(ROOT / p)) for p in PAGES} == dict.fromkeys(PAGES, 0)
    tuples = {
        f"{path.relative_to(ROOT)}:{handler.lineno}": ast.unparse(handler.type)
        for path in sorted((ROOT / "prunelab/ui").rglob("*.py"))
        for handler in _handlers(path)
        if isinstance(handler.type, ast.Tuple)
    }
    assert tuples == {}


def test_a_panel_error_leaves_the_rest_of_the_page(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("the threshold broke")

    monkeypatch.setattr(activations, "activation_sparsity_effect", broken)
    cache.threshold_effect.clear()
    at = page("pages/3_Activations.py").run()
    assert not at.exception
    # the thresholding panel, and the sparsifier's accuracy beside dense, which thresholds at 0
    shown = {e.value for e in at.error}
    assert shown == {"Could not threshold conv2:input: the threshold broke"}
    assert any("Activation thresholding zeroes" in c.value for c in at.caption)  # after it
    assert at.selectbox(key=Keys.act_aggregate)  # the next panel is there
    assert metric(at, "Dead channels")  # and the page above
    cache.threshold_effect.clear()
