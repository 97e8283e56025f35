"""benchmarks/load_app.py runs: two sessions of the real app at once, each checked."""

from __future__ import annotations

import importlib.util
import sys

from tests.app.conftest import ROOT


def _benchmark():
    if "load_app" not in sys.modules:
        spec = importlib.util.spec_from_file_location("load_app", ROOT / "benchmarks/load_app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["load_app"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["load_app"]


def test_two_sessions_at_once_each_see_their_own_masks(capsys):
    assert _benchmark().main(["--sessions", "2", "--moves", "1", "--no-baseline"]) == 0
    out = capsys.readouterr().out
    assert "2 sessions at once" in out and "interactions in" in out and "peak" in out
    assert "checks passed: each of the 2 sessions saw its own model" in out


def test_every_session_asks_for_sparsities_no_other_session_asks_for():
    load_app = _benchmark()
    plans = [load_app.Plan.for_session(i) for i in range(28)]
    asked = [s for plan in plans for s in plan.sparsities]
    assert len(set(asked)) == len(asked) == 28 * 3
    assert {plan.spec for plan in plans[:4]} == set(load_app.SAMPLES)
    assert len({(plan.spec, plan.subset) for plan in plans[:20]}) == 20  # own sensitivity runs
