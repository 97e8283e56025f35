"""AppTest helpers: run a page of the app in-process, with optional fake uploads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


def page(path: str) -> AppTest:
    """An AppTest for ``app.py`` or ``pages/N_Name.py``, not yet run."""
    return AppTest.from_file(str(ROOT / path), default_timeout=TIMEOUT)


def assert_clean(at: AppTest) -> None:
    """No exception box and no error on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    for item in at.metric:
        if item.label == label:
            return item.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


class FakeUpload(io.BytesIO):
    """What st.file_uploader returns, enough for the sidebar."""

    def __init__(self, name: str, payload: bytes) -> None:
        super().__init__(payload)
        self.name = name


@pytest.fixture
def upload(monkeypatch):
    """Make the model file uploader return the given (name, bytes) in every AppTest run.

    AppTest cannot drive a file uploader, so the widget itself is replaced in-process.
    """

    def set_upload(name: str, payload: bytes) -> None:
        def fake(self, label, *args, **kwargs):
            return FakeUpload(name, payload)

        monkeypatch.setattr(DeltaGenerator, "file_uploader", fake)

    return set_upload
