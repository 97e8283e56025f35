"""Speed panels are honest: a difference is real only outside the measured spread (issue 16)."""

import pytest
import torch
from conftest import make_cnn
from torch import nn

import prunelab
from prunelab.analysis.speed import (
    MIN_EFFECT,
    NO_DIFFERENCE,
    Comparison,
    Spread,
    compare_latency,
    speed_report,
    timed_rounds,
)
from prunelab.errors import DeviceError
from tests.conftest import assert_unchanged, snapshot


def test_dense_and_masked_show_no_measurable_difference():
    model = make_cnn(0).eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.9)
    before = snapshot(model)
    result = compare_latency(model, masks, example_input=torch.randn(16, 3, 6, 6), repeats=41)
    assert_unchanged(model, before)
    assert result.verdict == NO_DIFFERENCE, result.explain()
    assert result.base.q1 <= result.base.median <= result.base.q3
    assert "within the spread" in result.explain()


def test_a_steady_difference_smaller_than_the_spread_is_not_called_real():
    # every round 0.02 ms slower (the paired differences never include zero), but each
    # model's own times spread over 0.2 ms: the verdict must not call 2% real
    base = [1.0 + 0.01 * (i % 21) for i in range(21)]
    other = [b + 0.02 for b in base]
    result = Comparison(
        base=Spread.of(base),
        other=Spread.of(other),
        difference=Spread.of([o - b for o, b in zip(other, base, strict=True)]),
    )
    assert result.difference.q1 > 0 and result.verdict == NO_DIFFERENCE
    wide = Comparison(  # the same pairs 0.5 ms apart: outside the spread, real
        base=Spread.of(base),
        other=Spread.of([b + 0.5 for b in base]),
        difference=Spread.of([0.5] * 21),
    )
    assert wide.real and "slower" in wide.verdict


def test_a_steady_difference_under_the_minimum_effect_is_not_called_real():
    # what CI measured once: the masked copy steadily 1% faster than its dense twin, with
    # the dense times so tight that the spread rule alone called it real
    base = [1.0] * 21
    other = [0.99] * 21
    result = Comparison(Spread.of(base), Spread.of(other), Spread.of([-0.01] * 21))
    assert result.verdict == NO_DIFFERENCE
    assert f"under {MIN_EFFECT:.0%} of the dense time" in result.explain()
    bigger = Comparison(Spread.of(base), Spread.of([0.9] * 21), Spread.of([-0.1] * 21))
    assert bigger.real and "faster" in bigger.verdict


def test_a_real_difference_is_called_real():
    torch.manual_seed(0)
    small = nn.Linear(64, 64).eval()
    large = nn.Sequential(*[nn.Linear(64, 64) for _ in range(40)]).eval()
    x = torch.randn(64, 64)
    samples = timed_rounds(
        {"small": (small, x), "large": (large, x)}, repeats=15, warmup=2, device=torch.device("cpu")
    )
    pairs = zip(samples["large"], samples["small"], strict=True)
    result = Comparison(
        base=Spread.of(samples["small"]),
        other=Spread.of(samples["large"]),
        difference=Spread.of([b - a for b, a in pairs]),
        names=("small", "large"),
    )
    assert result.real and result.ratio > 2
    assert result.verdict.startswith("large") and "slower" in result.verdict


def test_the_verdict_follows_the_spread_of_paired_differences():
    def comparison(differences):
        return Comparison(Spread.of([1.0]), Spread.of([1.0]), Spread.of(differences))

    assert comparison([-0.2, -0.1, 0.0, 0.1, 0.3]).verdict == NO_DIFFERENCE
    assert comparison([0.1, 0.2, 0.2, 0.3, -0.5]).real  # middle half all above zero
    assert not comparison([-0.3, -0.1, 0.1, 0.3]).real
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])


def test_speed_report_has_spreads_and_verdicts():
    model = make_cnn(0).eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    report = speed_report(
        model, masks, example_input=torch.randn(1, 3, 6, 6), batch_sizes=(4,), repeats=21
    )
    rows = report.set_index("variant")
    assert (rows["q1_ms"] <= rows["median_ms"]).all() and (rows["median_ms"] <= rows["q3_ms"]).all()
    assert rows.loc["dense", "verdict"] == "the baseline"
    assert rows.loc["masked", "verdict"] == NO_DIFFERENCE
    assert NO_DIFFERENCE in report.attrs["explanation"]


def test_an_unknown_device_is_refused_clearly():
    # speed had its own device choice that skipped the check every other entry point makes
    model = make_cnn(0).eval()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        compare_latency(model, masks, example_input=torch.randn(2, 3, 6, 6), device="tpu")
