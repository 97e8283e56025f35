"""Is pruning work what an app user waits for? Slider move vs a rerun with no change.

Run: ``uv run python benchmarks/bench_app.py [--repeats 7]``

With Streamlit's AppTest on the Prune page, times a rerun where nothing changed (the baseline:
sidebar, cache lookups, figures) and a rerun after a sparsity slider move (the same plus new
masks), for sample:digits-cnn and torchvision:resnet50 (random weights). Goal: a slider move
costs at most 1.5x a no-op rerun. Both are measured in this process; only ratios are claimed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prunelab.ui.state import Keys  # noqa: E402


def _timed(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def measure(model: str | None, repeats: int) -> tuple[float, float]:
    at = AppTest.from_file(str(ROOT / "pages" / "2_Prune.py"), default_timeout=600)
    at.run()
    if model is not None:
        at.sidebar.radio(key=Keys.model_source).set_value("torchvision architecture").run()
        at.sidebar.selectbox(key=Keys.torchvision_arch).select(model).run()
        at.sidebar.selectbox(key=Keys.data_choice).select("(no data: weights only)").run()
    at.run()  # warm: model loaded, pruner built, figures drawn once
    noop, moves = [], []
    levels = iter([0.3 + 0.02 * i for i in range(10 * repeats)])
    for _ in range(repeats):
        noop.append(_timed(at))
        at.slider(key=Keys.sparsity).set_value(round(next(levels), 2))
        moves.append(_timed(at))
    return statistics.median(noop), statistics.median(moves)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    ok = True
    for label, model in (("sample:digits-cnn", None), ("torchvision:resnet50", "resnet50")):
        noop, move = measure(model, args.repeats)
        ratio = move / noop
        met = ratio <= 1.5
        ok &= met
        print(
            f"{label:<22} slider move / no-op rerun = {ratio:5.2f}x  "
            f"(move {move * 1e3:7.1f} ms, no-op {noop * 1e3:7.1f} ms)  "
            f"goal <= 1.5x: {'met' if met else 'NOT met'}",
            flush=True,
        )
    print("all goals met" if ok else "SOME GOALS NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
