"""Re-take the README's screenshots: ``uv run python tests/browser/screenshots/take.py``.

Needs Debian's chromium (apt-get install -y chromium). Starts the app headless on loopback,
visits each page and saves a PNG beside this file. Names given as arguments
(``take.py prune-lm.png``) re-take only those.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser._serve import CHROMIUM, CHROMIUM_ARGS, streamlit_app  # noqa: E402

SHOTS = {  # file: (page, text to wait for, button to press first, charts to wait for)
    "prune.png": ("Prune", "Drive the masks by", None, 1),
    "sensitivity.png": ("Sensitivity", "Run the analysis", "Run the analysis", 3),
    "learn.png": ("Learn", "Which weights matter", None, 4),
    "prune-lm.png": ("Prune", "Next-token predictions", None, 1),
}
MODELS = {"prune-lm.png": "sample:pydoc-gpt"}  # shots of another model than the app's default


def _pick_model(page, spec: str, wait_for: str) -> None:
    """Choose ``spec`` in the sidebar's sample menu (a new page is a new session)."""
    menu = page.get_by_role("combobox", name="Sample model").first
    menu.wait_for(timeout=120_000)
    menu.click()
    page.keyboard.type(spec.removeprefix("sample:"))
    page.keyboard.press("Enter")
    page.get_by_text(wait_for).first.wait_for(timeout=120_000)


def main(names: list[str]) -> int:
    with streamlit_app() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, (path, wait_for, click, charts) in SHOTS.items():
            if names and name not in names:
                continue
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(f"{url}/{path}", wait_until="domcontentloaded")
            page.get_by_text(wait_for if name not in MODELS else "Strategy").first.wait_for(
                timeout=120_000
            )
            if name in MODELS:
                _pick_model(page, MODELS[name], wait_for)
            if click:
                page.get_by_role("button", name=click).first.click()
                page.get_by_text("Recipe builder").wait_for(timeout=300_000)
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length >= {charts}",
                timeout=300_000,
            )
            page.wait_for_timeout(2000)  # let the last chart finish drawing
            page.screenshot(path=str(HERE / name))
            print(f"saved {HERE / name}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
