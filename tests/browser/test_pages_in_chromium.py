"""Every page of the real app in chromium, as a person meets it: on the default model and on
torchvision:resnet18, no exception box and no error; and an uploaded model stays picked from
page to page.

Pages are changed through the sidebar's navigation, as a person does: that keeps the browser
session (a fresh URL would start a new one), and a file uploader of the previous page is
gone, which is what the upload test is about. One server for the module.
"""

from __future__ import annotations

import re
import time

import pytest
import torch

from prunelab.io import zoo

pytestmark = pytest.mark.browser

# a page's first run on resnet18 computes what later runs take from the caches
PAGE_TIMEOUT_S = 300
PAGES = ("Model", "Prune", "Activations", "Sensitivity", "Train", "Export", "Learn")


@pytest.fixture
def tab(browser, server):
    """A new browser session on the landing page, settled."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server, wait_until="domcontentloaded")
    page.locator('[data-testid="stApp"]').wait_for(timeout=60_000)
    _settle(page)
    yield page
    page.close()


def _settle(page, timeout_s: float = PAGE_TIMEOUT_S) -> None:
    """Wait until the script has stopped running for good (0.6 s without a rerun)."""
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        state = page.get_attribute('[data-testid="stApp"]', "data-test-script-state")
        if state == "notRunning":
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 0.6:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(100)
    raise TimeoutError(f"the page was still running after {timeout_s} s")


def _problems(page) -> list[str]:
    """What the page shows as broken: exception boxes and st.error messages."""
    exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    return [*exceptions, *errors]


def _go(page, name: str) -> None:
    page.locator(f'[data-testid="stSidebarNav"] a[href$="/{name}"]').click()
    page.wait_for_url(re.compile(f"/{name}$"))
    _settle(page)


def _sidebar(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def _every_page(page, model_name: str) -> dict[str, list[str]]:
    seen = {}
    for name in PAGES:
        _go(page, name)
        seen[name] = _problems(page)
        assert f"{model_name}:" in _sidebar(page), name  # still the model picked
    return seen


def test_every_page_on_the_default_model(tab):
    assert "digits-cnn:" in _sidebar(tab)
    seen = _every_page(tab, "digits-cnn")
    assert not any(seen.values()), {k: v for k, v in seen.items() if v}


def test_every_page_on_resnet18(tab):
    tab.locator('[data-testid="stSidebar"] label', has_text="torchvision architecture").click()
    _settle(tab)
    assert "resnet18:" in _sidebar(tab)  # the first architecture offered
    assert "digits resized to 3x224x224" in _sidebar(tab)  # its own data, offline
    seen = _every_page(tab, "resnet18")
    assert not any(seen.values()), {k: v for k, v in seen.items() if v}
    _go(tab, "Model")  # judged by fidelity, and says so: no accuracy on made-up labels
    main = tab.locator('[data-testid="stMain"]').inner_text()
    assert "no accuracy is measured" in main and "agreement" in main


def _choose(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stSelectbox"]', has_text=label)
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()
    _settle(page)


def test_an_uploaded_state_dict_stays_across_pages(tab, tmp_path):
    state = {k: v * 1.5 for k, v in zoo.load("sample:digits-mlp").model.state_dict().items()}
    path = tmp_path / "my-mlp.pt"
    torch.save(state, path)
    tab.locator('[data-testid="stSidebar"] label', has_text="Upload a file").click()
    _settle(tab)
    _choose(tab, "Architecture of a state_dict", "sample:digits-mlp")
    tab.locator('[data-testid="stSidebar"] input[type="file"]').set_input_files(str(path))
    tab.get_by_text("Using uploaded file").wait_for(timeout=60_000)
    _settle(tab)
    for name in ("Model", "Prune", "Model"):
        _go(tab, name)
        assert not _problems(tab), name
        sidebar = _sidebar(tab)
        assert "Using uploaded file my-mlp.pt" in sidebar, name
        assert "Upload a model file to continue" not in sidebar
    assert tab.locator("h1").first.inner_text().strip() == "Model: my-mlp"
