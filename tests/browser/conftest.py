"""Fixtures shared by the browser tests: the app served on loopback, and headless chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.browser._serve import CHROMIUM, CHROMIUM_ARGS, streamlit_app


@pytest.fixture(scope="module")
def server():
    with streamlit_app() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium to run this test")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
