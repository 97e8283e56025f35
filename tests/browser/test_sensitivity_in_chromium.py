"""The Sensitivity page in a real browser: switching the model switches the layer choice."""

from __future__ import annotations

import pytest

from prunelab import targets
from prunelab.io import zoo

pytestmark = pytest.mark.browser


def _chosen_layers(page) -> list[str]:
    """The tags of the "Layers" multiselect, as the page shows them."""
    box = page.locator('[data-testid="stMultiSelect"]', has_text="Layers").first
    return [t.get_attribute("aria-label") for t in box.locator("span[data-tag]").all()]


def _wait_for_layers(page, expected: list[str]) -> None:
    page.wait_for_function(
        """(expected) => {
            const box = [...document.querySelectorAll('[data-testid="stMultiSelect"]')]
                .find(e => e.innerText.includes('Layers'));
            if (!box) return false;
            const tags = [...box.querySelectorAll('span[data-tag]')]
                .map(t => t.getAttribute('aria-label'));
            return JSON.stringify(tags) === JSON.stringify(expected);
        }""",
        arg=expected,
        timeout=90_000,
    )


def test_switching_the_model_switches_the_layer_choice(server, browser, tmp_path):
    cnn = [t.fqn for t in targets(zoo.load("sample:digits-cnn").model)]
    resnet = [t.fqn for t in targets(zoo.load("sample:digits-resnet").model)]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/Sensitivity", wait_until="domcontentloaded")
    _wait_for_layers(page, cnn)

    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]', has_text="Sample model").click()
    page.get_by_role("option", name="sample:digits-resnet").click()
    _wait_for_layers(page, resnet)  # before the fix: ["fc.weight"] alone
    assert _chosen_layers(page) == resnet
    page.screenshot(path=str(tmp_path / "sensitivity-after-model-switch.png"))
