"""The explorer in a real JupyterLab: start a server on loopback, open the walk-through notebook
in chromium, run its cells, drag the explorer's sparsity slider and see the accuracy change.

Setting ``PRUNELAB_EXPLORER_SHOT=path.png`` also saves the README's picture of the explorer:
``PRUNELAB_EXPLORER_SHOT=tests/browser/screenshots/explorer.png uv run pytest
tests/browser/test_explorer_in_jupyter.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser._serve import ROOT, _free_port, stop

pytestmark = pytest.mark.browser

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
WAIT_MS = 240_000  # a loaded 2-core machine runs the notebook in about a minute; alone, far less


SETTINGS = {
    # a quiet screen: no news pop-up, no update check
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # every cell stays in the page (by default cells out of view are not drawn)
    "notebook-extension/tracker": {"windowingMode": "none"},
}


def _settings(folder: Path) -> None:
    for name, values in SETTINGS.items():
        path = folder / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def jupyter_lab(root: Path) -> Iterator[str]:
    """Run JupyterLab on loopback serving ``root``; yield its URL and token."""
    pytest.importorskip("jupyterlab")
    port, token = _free_port(), secrets.token_hex(16)
    _settings(root / ".settings")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",  # CI runs as root
            "--ServerApp.terminals_enabled=False",
            "--LabApp.extension_manager=readonly",  # no look-ups on a package index
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={root / '.settings'}",
            f"--LabApp.workspaces_dir={root / '.workspaces'}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=root,
        env={**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".config")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {process.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"jupyter lab did not answer at {url}") from None
                time.sleep(0.5)
        yield url, token
    finally:
        stop(process)


def _wait_for_kernel(url: str, token: str, timeout: float = 120) -> None:
    """Until the server has a kernel that is idle (started and answering)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5) as reply:
            kernels = json.load(reply)
        if kernels and all(k["execution_state"] == "idle" for k in kernels):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no idle kernel in {timeout} s")


def _accuracy(page) -> str:
    card = page.locator(".prunelab-explorer .prunelab-card", has_text="Accuracy").first
    return card.locator(".prunelab-value").inner_text().strip()


def test_explorer_slider_in_jupyterlab_changes_the_metric(browser, tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)  # what the kernel writes stays there
    started = time.monotonic()
    with jupyter_lab(tmp_path) as (url, token):
        page = browser.new_page(viewport={"width": 1440, "height": 1080})
        page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}", wait_until="domcontentloaded")
        page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
        _wait_for_kernel(url, token)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        page.keyboard.press("Control+b")  # fold the file browser: room for the explorer
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        # every code cell has run (numbered prompts, none waiting): the kernel is free
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.innerText));
            }""",
            timeout=WAIT_MS,
        )
        before = _accuracy(page)
        assert before.endswith("%"), before

        explorer = page.locator(".prunelab-explorer").first
        explorer.scroll_into_view_if_needed()
        slider = explorer.locator(".widget-hslider", has_text="Sparsity").first
        track = slider.locator(".noUi-target").first.bounding_box()
        handle = slider.locator(".noUi-handle").first.bounding_box()
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] * 0.9, handle["y"] + handle["height"] / 2)
        page.mouse.up()

        page.wait_for_function(
            """before => {
                const card = [...document.querySelectorAll('.prunelab-explorer .prunelab-card')]
                    .find(c => c.innerText.includes('Accuracy'));
                return card && card.querySelector('.prunelab-value').innerText.trim() !== before;
            }""",
            arg=before,
            timeout=60_000,
        )
        after = _accuracy(page)
        readout = slider.locator(".widget-readout").first.inner_text().strip()
        assert float(readout) > 0.8, readout
        assert float(after.rstrip("%")) < float(before.rstrip("%")), (before, after)
        assert (
            page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            .filter(has_text="Traceback")
            .count()
            == 0
        )
        shot = os.environ.get("PRUNELAB_EXPLORER_SHOT")
        if shot:
            explorer.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)  # let the figure finish redrawing
            page.screenshot(path=shot)
    assert time.monotonic() - started < 300
