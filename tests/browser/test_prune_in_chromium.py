"""The real app in a real browser: start streamlit, open the Prune page, move the slider."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def _sparsity(page) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text="Sparsity").first
    value = metric.locator('[data-testid="stMetricValue"]')
    value.wait_for(timeout=60_000)
    return value.inner_text().strip()


def test_prune_page_slider_changes_sparsity(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/Prune", wait_until="domcontentloaded")
    page.get_by_text("Drive the masks by").wait_for(timeout=90_000)
    assert _sparsity(page) == "50.0%"

    slider = page.get_by_role("slider", name=re.compile("Sparsity")).first
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stMetricValue"]')]
                 .some(e => e.innerText.trim() === '60.0%')""",
        timeout=60_000,
    )
    assert _sparsity(page) == "60.0%"
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(tmp_path / "prune.png"), full_page=True)
    assert (tmp_path / "prune.png").stat().st_size > 10_000
