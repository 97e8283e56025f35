"""Sweeps and per-layer sensitivity equal the naive loops; prefix caching is exact."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunelab
from prunelab.analysis import evaluate
from prunelab.sweeps import RunOptions, SensitivityConfig, sensitivity, sweep
from prunelab.sweeps.prefix import PrefixPlan
from tests.conftest import assert_unchanged, snapshot


class Residual(nn.Module):
    """A small residual net: the skip input must survive the cut."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Linear(6 * 16, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.body(x)
        return self.head(torch.flatten(torch.nn.functional.avg_pool2d(x, 2), 1))


class Dynamic(Residual):
    """Data-dependent control flow: cannot be traced, must fall back to full passes."""

    def forward(self, x):
        if x.sum() > 0:
            return super().forward(x)
        return super().forward(-x)


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(3)
    return torch.rand(48, 1, 8, 8, generator=gen), torch.randint(0, 4, (48,), generator=gen)


def _naive(model, data, levels):
    out = []
    for target in prunelab.targets(model):
        for level in levels:
            pruned = copy.deepcopy(model)
            torch_prune.l1_unstructured(
                pruned.get_submodule(target.module_fqn), target.param_name, amount=level
            )
            out.append(evaluate(pruned, data, metrics=("accuracy", "loss")))
    return out


@pytest.mark.parametrize("make", [Residual, Dynamic])
def test_sensitivity_equals_the_naive_loop(make, data):
    model = make().eval()
    levels = [0.2, 0.5, 0.9]
    before = snapshot(model)
    table = sensitivity(model, data, sparsities=levels)
    assert_unchanged(model, before)
    expected = _naive(model, data, levels)
    assert np.allclose(table["accuracy"], [e["accuracy"] for e in expected])
    assert np.allclose(table["loss"], [e["loss"] for e in expected], atol=1e-5)
    dense = evaluate(model, data)["accuracy"]
    assert np.allclose(table["drop"], dense - table["accuracy"])
    assert table.attrs["baseline"] == pytest.approx(dense)
    assert list(table["layer"].unique()) == [t.fqn for t in prunelab.targets(model)]


def test_prefix_plan_splits_residual_models_exactly(data):
    model = Residual().eval()
    x = data[0][:5]
    plan = PrefixPlan.for_model(model, x)
    assert plan is not None
    assert PrefixPlan.for_model(Dynamic().eval(), x) is None
    cuts = [c for t in prunelab.targets(model) if (c := plan.cut_for(t.fqn)) is not None]
    assert cuts  # else nothing below is checked
    for cut in cuts:
        out = plan.suffix(cut, plan.prefix(cut, x), {})
        assert torch.allclose(out, model(x), atol=1e-6)


def test_sensitivity_subset_and_early_stop(data):
    model = Residual().eval()
    # by loss: this random-weight net's accuracy does not move at all (every drop would be 0)
    table = sensitivity(
        model,
        data,
        sparsities=[0.3, 0.6, 0.9, 1.0],
        config=SensitivityConfig(subset=20, early_stop=0.0, metric="loss"),
    )
    assert table.attrs["samples"] == 20
    stopped = 0
    for _, rows in table.groupby("layer"):
        evaluated = rows["evaluated"].tolist()
        # once a level's drop passes the bound, later levels are skipped (NaN)
        first_bad = next((i for i, d in enumerate(rows["drop"]) if d > 0), None)
        if first_bad is None:
            assert all(evaluated)
        else:
            assert evaluated == [True] * (first_bad + 1) + [False] * (3 - first_bad)
            assert rows["loss"].iloc[first_bad + 1 :].isna().all()
            stopped += first_bad < 3
    assert stopped  # else the early stop was never exercised


def test_sensitivity_with_a_channel_strategy_and_fidelity_metric(data):
    model = Residual().eval()
    strategy = prunelab.get_strategy("weight-norm-channel", p=2)
    table = sensitivity(
        model,
        data[0],
        sparsities=[0.5],
        strategy=strategy,
        config=SensitivityConfig(metric="agreement"),
    )
    assert np.allclose(table["drop"], 1.0 - table["agreement"])  # dense agrees with itself
    # this random-weight net predicts one class for every input, so agreement stays 1; the
    # output distributions do move, which KL shows
    assert (table["kl"] > 0).all()
    assert "accuracy" not in table


def test_magnitude_proxy_needs_no_data_and_is_monotone():
    model = Residual()
    levels = [i / 100 for i in range(0, 101)]
    table = sensitivity(model, sparsities=levels, config=SensitivityConfig(method="magnitude"))
    for _, rows in table.groupby("layer"):
        drops = rows["drop"].to_numpy()
        assert drops[0] == 0 and drops[-1] == pytest.approx(1.0)
        assert (np.diff(drops) >= 0).all()
    w = model.stem.weight.detach().flatten().abs()
    k = round(0.5 * w.numel())
    expected = float(w.sort().values[:k].square().sum() / w.square().sum())
    row = table[(table.layer == "stem.weight") & (table.sparsity == 0.5)]
    assert row["drop"].item() == pytest.approx(expected, rel=1e-5)


def test_sensitivity_bad_input(data):
    model = Residual()
    with pytest.raises(ValueError, match="needs data"):
        sensitivity(model)
    with pytest.raises(ValueError, match="accepted: evaluate, magnitude"):
        sensitivity(model, data, config=SensitivityConfig(method="hessian"))
    with pytest.raises(ValueError, match="unknown metric"):
        sensitivity(model, data, config=SensitivityConfig(metric="f1"))
    with pytest.raises(ValueError, match="matches no prunable tensor"):
        sensitivity(model, data, config=SensitivityConfig(layers=["nothing.*"]))
    with pytest.raises(ValueError, match="needs labelled data"):
        sensitivity(model, data[0], config=SensitivityConfig(metric="accuracy"))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        sensitivity(model, data, sparsities=[1.5])


def test_sweep_curves_and_progress(data):
    model = Residual().eval()
    calls = []
    table = sweep(
        model,
        data,
        strategies=["global-magnitude", "random"],
        sparsities=[0.0, 0.5, 0.9],
        run=RunOptions(progress=lambda f, m: calls.append(f)),
    )
    assert table["strategy"].tolist() == ["global-magnitude"] * 3 + ["random"] * 3
    assert calls[-1] == 1.0 and len(calls) == 6
    dense = table[table.requested == 0.0]
    assert (dense["agreement"] == 1.0).all()
    masks = prunelab.prune(model, "global-magnitude", sparsity=0.5)
    assert table.iloc[1]["accuracy"] == pytest.approx(
        evaluate(model, data, masks=masks)["accuracy"]
    )
    assert not math.isnan(table["kl"].sum())


def test_recording_all_cuts_at_once_equals_one_prefix_per_cut(data, monkeypatch):
    model = Residual().eval()
    levels = [0.3, 0.8]
    recorded = sensitivity(model, data, sparsities=levels)
    monkeypatch.setattr("prunelab.sweeps.runner._RECORD_BYTES", 0)  # too big: one prefix per cut
    per_cut = sensitivity(model, data, sparsities=levels)
    assert np.array_equal(recorded["loss"].to_numpy(), per_cut["loss"].to_numpy())
