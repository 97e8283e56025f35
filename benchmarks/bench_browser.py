"""Is a slider move instant in a real browser? Each app slider against a bare page, same run.

Run: ``uv run python benchmarks/bench_browser.py [--moves 12] [--load] [--quick]``

Starts the app (app.py) and a bare Streamlit page with one slider and one metric
(``benchmarks/bare_page.py``) on loopback from this environment, and drives Debian's chromium
through Playwright. A move is one arrow-key press on a focused slider, timed in the page from
the keydown until the script run it caused has ended and been drawn: the server's
``script_finished`` message (fragment runs included) read off the page's websocket as it
arrives, then the next frame the page draws. When a move causes more than one run, the last
counts. (The ``data-test-script-state`` attribute of ``stApp``, the status widget's source,
misses fast runs: React batches "running" and "not running" into one render.) Moves of an app
slider and of the bare slider alternate, so both see the same load on the machine; each
slider's ratio is the median of its moves over the median of the bare moves made between
them. Both pages are served with the project's ``.streamlit/config.toml``. Each slider's line
also says when ``script_finished`` arrived (median), to tell server time from drawing time.

Sliders: the Prune page's sparsity and threshold sliders on sample:digits-cnn and on
torchvision:resnet18, the Activations page's threshold slider (digits-cnn) and the Sensitivity
page's overall-sparsity slider of the recipe builder (after an analysis with 3 levels on the
first 16 samples: the cheapest real table). Goals: Prune sliders at most 2x the bare page on
digits-cnn and 3x on resnet18, the others at most 3x; with ``--load`` (one CPU-bound process of
this benchmark's own, bounded in time, beside the server) all within 3x.

``--baseline figure`` serves the bare page with one plotly heatmap redrawn per move as well,
to tell the cost of redrawing a figure in the browser from the rest of the app's work.

Each slider is moved ``--warmup`` times untimed first (a new page's first move loads figures
and caches). A slider at its end turns back, so every move changes the value.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser._serve import CHROMIUM, CHROMIUM_ARGS, streamlit_app  # noqa: E402

BARE_PAGE = Path(__file__).resolve().parent / "bare_page.py"
# the bare page as the baseline (one slider, one metric), or the same page also redrawing one
# plotly heatmap per move: what the figure a slider changes costs by itself
BASELINES = {"bare": {}, "figure": {"PRUNELAB_BARE_FIGURE": "1"}}
VIEWPORT = {"width": 1280, "height": 720}
QUIET_MS = 300  # a rerun has ended when the script state stays "not running" this long
SETUP_TIMEOUT_MS = 600_000  # loading resnet18 and sorting its scores, an analysis
MOVE_TIMEOUT_MS = 120_000
LOAD_SECONDS = 1800  # the --load process ends by itself after this, if not stopped first

# Installed in every document before its own scripts. It records the time of each keydown, and
# of each script run's end: the ForwardMsg whose field 6 (script_finished) is set, read off the
# websocket as it arrives, with the time of the next frame drawn after it ("drawn"). Statuses
# 0 and 3 are a finished run and a finished fragment run; 2 is a run stopped for a rerun.
# (stApp's data-test-script-state attribute is not enough: when a run is fast, React batches
# "running" and "not running" into one render and the attribute never changes.)
PROBE = """
(() => {
  const probe = { key: null, log: [] };
  window.__probe = probe;
  document.addEventListener('keydown', () => { probe.key = performance.now(); }, true);
  const finished = (data) => {
    if (!(data instanceof ArrayBuffer)) return null;
    const b = new Uint8Array(data);
    let i = 0;
    const varint = () => {
      let v = 0, s = 0, x;
      do { x = b[i++]; v += (x & 0x7f) * 2 ** s; s += 7; } while (x & 0x80);
      return v;
    };
    while (i < b.length) {
      const key = varint(), field = Math.floor(key / 8), wire = key & 7;
      if (wire === 0) { const v = varint(); if (field === 6) return v; }
      else if (wire === 2) { const n = varint(); i += n; }
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else return null;
    }
    return null;
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        const status = finished(event.data);
        if (status === null) return;
        const entry = { at: performance.now(), status, drawn: null };
        probe.log.push(entry);
        requestAnimationFrame(() => setTimeout(() => { entry.drawn = performance.now(); }));
      });
    }
  };
})();
"""

# True once a run that ended after the keydown has been drawn, and nothing else ended since
# for quiet ms (a move can cause more than one run)
SETTLED = """
([since, quiet]) => {
  const log = window.__probe.log.filter((e) => e.at >= since);
  if (!log.length) return false;
  const last = log[log.length - 1];
  return last.status !== 2 && last.drawn !== null && performance.now() - last.at >= quiet;
}
"""

IDLE = """
(quiet) => {
  const log = window.__probe.log;
  if (!log.length) return false;
  const last = log[log.length - 1];
  return last.status !== 2 && last.drawn !== null && performance.now() - last.at >= quiet;
}
"""

# when the last run of the move ended: its script_finished arrived, and the page drew it
FINISHED = """
() => {
  const last = window.__probe.log[window.__probe.log.length - 1];
  return [last.at, last.drawn];
}
"""


@dataclass
class Result:
    label: str
    goal: float
    app: list[float]
    bare: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.app) / statistics.median(self.bare)


def wait_idle(page: Page, timeout: float = SETUP_TIMEOUT_MS) -> None:
    page.wait_for_function(IDLE, arg=QUIET_MS, timeout=timeout, polling=50)


@dataclass
class Slider:
    """A slider on a page, moved one arrow-key step at a time, turning back at either end."""

    page: Page
    locator: Locator
    direction: str = "ArrowRight"
    arrived: list[float] = field(default_factory=list)  # ms from keydown to script_finished

    def move(self) -> float:
        """One move; milliseconds from the keydown to the end of the rerun it caused."""
        # an <input type="range">: its value and ends, as numbers
        now, low, high = self.locator.evaluate("e => [+e.value, +e.min, +e.max]")
        if now >= high:
            self.direction = "ArrowLeft"
        elif now <= low:
            self.direction = "ArrowRight"
        self.page.evaluate("window.__probe.log = window.__probe.log.slice(-1)")
        self.locator.press(self.direction)
        since = self.page.evaluate("window.__probe.key")
        self.page.wait_for_function(
            SETTLED, arg=[since, QUIET_MS], timeout=MOVE_TIMEOUT_MS, polling=20
        )
        arrived, drawn = self.page.evaluate(FINISHED)
        self.arrived.append(arrived - since)
        return drawn - since


def measure(
    label: str, goal: float, app: Slider, bare: Slider, *, moves: int, warmup: int
) -> Result:
    app.locator.wait_for(timeout=SETUP_TIMEOUT_MS)
    wait_idle(app.page)
    for _ in range(warmup):
        app.move()
    app.arrived.clear()
    bare.arrived.clear()
    app_times, bare_times = [], []
    for _ in range(moves):
        bare_times.append(bare.move())
        app_times.append(app.move())
    result = Result(label, goal, app_times, bare_times)
    print(
        f"  {label}: app median {statistics.median(app_times):.0f} ms "
        f"(script finished after {statistics.median(app.arrived[-moves:]):.0f}), bare "
        f"{statistics.median(bare_times):.0f} ms "
        f"({statistics.median(bare.arrived[-moves:]):.0f}), {result.ratio:.2f}x",
        flush=True,
    )
    return result


def slider(page: Page, name: str) -> Slider:
    return Slider(page, page.get_by_role("slider", name=re.compile(name)).first)


def pick(page: Page, group: str, option: str) -> None:
    """Click ``option`` of the radio group labelled ``group``, then wait for the reruns."""
    radio = page.locator('[data-testid="stRadio"]', has_text=group).first
    radio.wait_for(timeout=SETUP_TIMEOUT_MS)
    radio.get_by_text(option, exact=True).click()
    page.wait_for_timeout(QUIET_MS)
    wait_idle(page)


def open_page(page: Page, name: str) -> None:
    """Go to another page of the app in the same session (its sidebar link)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=name).first.click()
    page.wait_for_timeout(QUIET_MS)
    wait_idle(page)


def reveal(page: Page, view: str) -> None:
    """Open the view named ``view`` (a tab, or an option of a view selector)."""
    target = page.get_by_role("tab", name=view, exact=True)
    if not target.count():
        target = page.get_by_text(view, exact=True)
    target.first.click()
    page.wait_for_timeout(QUIET_MS)
    wait_idle(page)


def run_sensitivity(page: Page) -> None:
    """The cheapest real analysis: 3 levels, the first 16 samples."""
    levels = slider(page, "^Levels").locator
    levels.wait_for(timeout=SETUP_TIMEOUT_MS)
    levels.press("Home")
    page.wait_for_timeout(QUIET_MS)
    wait_idle(page)
    samples = page.locator('[data-testid="stNumberInput"]', has_text="Samples").locator("input")
    samples.fill("16")
    samples.press("Enter")
    page.wait_for_timeout(QUIET_MS)
    wait_idle(page)
    page.get_by_role("button", name=re.compile("^Run the analysis")).click()
    page.get_by_text("Recipe builder").wait_for(timeout=SETUP_TIMEOUT_MS)
    wait_idle(page)


@contextlib.contextmanager
def cpu_load(on: bool) -> Iterator[None]:
    """One CPU-bound process beside the server (a Python busy loop that ends by itself)."""
    if not on:
        yield
        return
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time\nend = time.monotonic() + {LOAD_SECONDS}\n"
            "while time.monotonic() < end:\n    sum(range(10000))\n",
        ]
    )
    try:
        yield
    finally:
        busy.terminate()
        busy.wait(timeout=10)


def run(args: argparse.Namespace) -> list[Result]:
    warmup = 1 if args.quick else args.warmup
    cap = 3.0 if args.load else None
    goals = {"prune-small": cap or 2.0, "prune-large": 3.0, "other": 3.0}
    common = {"moves": args.moves, "warmup": warmup}
    results = []
    with (
        streamlit_app(BARE_PAGE, env=BASELINES[args.baseline]) as bare_url,
        streamlit_app() as app_url,
        cpu_load(args.load),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        for url in (bare_url, f"{app_url}/Prune"):
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(PROBE)
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            pages.append(page)
        bare_page, app = pages
        bare = slider(bare_page, "^Value")
        bare.locator.wait_for(timeout=SETUP_TIMEOUT_MS)
        wait_idle(bare_page)
        for _ in range(warmup):
            bare.move()

        def prune_sliders(model: str, goal: float) -> None:
            pick(app, "Drive the masks by", "sparsity")
            results.append(
                measure(
                    f"Prune sparsity, {model}",
                    goal,
                    slider(app, "^Sparsity"),
                    bare,
                    **common,
                )
            )
            pick(app, "Drive the masks by", "threshold")
            results.append(
                measure(
                    f"Prune threshold, {model}",
                    goal,
                    slider(app, "^Threshold"),
                    bare,
                    **common,
                )
            )

        print("sample:digits-cnn", flush=True)
        slider(app, "^Sparsity").locator.wait_for(timeout=SETUP_TIMEOUT_MS)
        prune_sliders("digits-cnn", goals["prune-small"])
        if not args.quick:
            open_page(app, "Activations")
            reveal(app, "Sparsity")
            results.append(
                measure(
                    "Activations threshold, digits-cnn",
                    goals["other"],
                    slider(app, "^Threshold: zero"),
                    bare,
                    **common,
                )
            )
            open_page(app, "Sensitivity")
            run_sensitivity(app)
            results.append(
                measure(
                    "Sensitivity recipe, digits-cnn",
                    goals["other"],
                    slider(app, "^Overall sparsity"),
                    bare,
                    **common,
                )
            )
            print("torchvision:resnet18", flush=True)
            open_page(app, "Prune")
            pick(app, "Model source", "torchvision architecture")
            prune_sliders("resnet18", goals["prune-large"])
        browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=12, help="timed moves per slider")
    parser.add_argument("--warmup", type=int, default=2, help="untimed moves per slider first")
    parser.add_argument(
        "--load", action="store_true", help="run a CPU-bound process beside the server"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the Prune page on digits-cnn, one warm-up move"
    )
    parser.add_argument(
        "--baseline",
        choices=sorted(BASELINES),
        default="bare",
        help="bare: one slider and one metric (the goals' baseline); figure: the same page "
        "also redrawing one 32x72 plotly heatmap per move",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    results = run(args)
    print()
    print(
        f"{'slider':<36} {'app median (range) ms':>24} {'bare median (range) ms':>24}"
        f" {'ratio':>7}  goal"
    )
    ok = True
    for r in results:
        met = r.ratio <= r.goal
        ok &= met
        app = f"{statistics.median(r.app):.0f} ({min(r.app):.0f}-{max(r.app):.0f})"
        bare = f"{statistics.median(r.bare):.0f} ({min(r.bare):.0f}-{max(r.bare):.0f})"
        print(
            f"{r.label:<36} {app:>24} {bare:>24} {r.ratio:6.2f}x"
            f"  <= {r.goal:g}x {'met' if met else 'NOT met'}"
        )
    load = " with a CPU-bound process beside the server" if args.load else ""
    load += f"; baseline: {args.baseline} page"
    print(
        f"{args.moves} moves per slider{load}; {time.monotonic() - start:.0f} s in all. "
        + ("All goals met." if ok else "SOME GOALS NOT MET.")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
